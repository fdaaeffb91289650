metadata
    name = "x"
        sub = "ignored by zcert"
            deeper = "y"
    next = "z"
curve
