metadata
    	name = "x"
