metadata
  name = "x"
