metadata
    name = "a" b
