metadata
    name = "x"