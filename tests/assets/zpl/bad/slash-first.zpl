/metadata
