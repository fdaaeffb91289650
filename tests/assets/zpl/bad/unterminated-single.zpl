metadata
    name = 'abc
