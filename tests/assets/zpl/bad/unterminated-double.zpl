metadata
    name = "abc
