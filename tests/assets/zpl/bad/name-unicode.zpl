metadata
    nämé = "x"
