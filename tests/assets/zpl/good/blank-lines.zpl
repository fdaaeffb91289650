
   
	
metadata

    	  
    name = "x"

