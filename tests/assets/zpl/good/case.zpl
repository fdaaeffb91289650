Metadata
    Name = "x"
metadata
    name = "y"
