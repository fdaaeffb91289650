metadata
    apostrophe = "it's"
    dquote = 'say "hi"'
    hash = "#not a comment"
    eq = "a=b"
    spaces = "  both sides  "
    backslash = "C:\\dir\\"
