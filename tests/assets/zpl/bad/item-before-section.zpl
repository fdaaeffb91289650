# a comment
    name = "x"
