metadata
    full name = "x"
