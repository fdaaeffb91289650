metadata
    name = 'it''s'
