metadata
    na	me = "x"
