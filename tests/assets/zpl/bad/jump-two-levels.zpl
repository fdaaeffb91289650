metadata
        name = "x"
