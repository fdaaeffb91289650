metadata
    = "x"
