metadata
    a.b-c_d$e@f&g+h/i = "all name characters"
    0digit = "names may start with a digit"
