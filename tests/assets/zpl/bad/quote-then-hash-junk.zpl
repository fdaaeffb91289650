metadata
    name = "x"y#c
