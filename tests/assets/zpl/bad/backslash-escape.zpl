metadata
    name = "a\"b"
