"""The index engine: the handle, its write transaction and read snapshot, and maintenance."""
