metadata
    name = "first
second"
