metadata
    kept = # kept whole # even this
    empty =#gone
    tabbed =	# kept too
