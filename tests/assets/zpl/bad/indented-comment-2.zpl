metadata
  # two spaces
