metadata
