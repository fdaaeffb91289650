metadata
    name = "x"
