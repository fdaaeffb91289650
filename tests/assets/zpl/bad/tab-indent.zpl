metadata
	name = "x"
