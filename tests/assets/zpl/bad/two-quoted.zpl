metadata
    name = "x" "y"
