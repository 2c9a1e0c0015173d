"""Operations that reshape an existing datastore without re-embedding it."""
