metadata
    bare = bare value   # comment
    inner = say "hi" and 'bye'
    padded =    lots of space   
    hash = a#b
