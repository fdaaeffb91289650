metadata
    name/ = "x"
