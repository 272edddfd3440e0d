"""Text: near-duplicate detection over document collections."""
