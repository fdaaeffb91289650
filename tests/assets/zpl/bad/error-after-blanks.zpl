

# c

metadata
   x
