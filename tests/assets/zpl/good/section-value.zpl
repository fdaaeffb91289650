metadata = "section with a value"
    name = "x"
