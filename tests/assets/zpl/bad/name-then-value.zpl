metadata
    name value
