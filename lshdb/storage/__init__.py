"""Storage: the index folder, LMDB, row files, posting lists and the write lock."""
