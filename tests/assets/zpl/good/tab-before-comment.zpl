	# a tab then a comment
metadata
    	# spaces, a tab, a comment
    name = "x"
