metadata
      name = "x"
