metadata
    name = "first"
    name = "second"
metadata
    name = "other section"
