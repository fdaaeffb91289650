metadata
    name = "Alice"

curve
    public-key = "x"   
