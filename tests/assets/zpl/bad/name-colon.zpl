metadata
    name: value
