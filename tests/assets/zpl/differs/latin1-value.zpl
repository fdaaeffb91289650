metadata
    name = "café"
