metadata
    a = "v"
    b="v"
    c    =    "v"
    d ='v'
    e
    f =
    g = ""
    h = ''
