# top
metadata   # after a section name
    # indented comment
            # deeper than any parent
    a = "v"#no space
    b = "v"   # spaced
    c = 'v'	# tab
# end
