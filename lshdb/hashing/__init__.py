"""Hashing: items into bucket keys and codes (families, multi-probe, MinHash, shingles)."""
