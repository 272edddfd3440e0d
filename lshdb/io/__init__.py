"""Inputs: vectors, keys, documents and token sets from files, and loading them in batches."""
