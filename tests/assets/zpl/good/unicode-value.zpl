metadata
    name = "Zoë Ünïcødé ✓"
    bare = 日本語
