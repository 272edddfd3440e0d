"""The format versions this lshdb writes and reads, and reading one ``meta`` record."""

from __future__ import annotations

from typing import Any

from ..errors import CorruptIndexError
from ..storage.codec import unpack_meta

__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "DURABILITY", "get_meta"]

FORMAT_VERSION = 4  # the newest format this lshdb writes
# format 1: no runs (lshdb.storage.runs); 3: float16 rows or codes that the calibration
# chose (an lshdb that reads only 1 and 2 would misread those rows, or write rows without
# codes); 4: jaccard band keys of scheme 2 (lshdb.hashing.bands; an older lshdb would look
# up the wrong buckets). An index is marked with the oldest format that describes it.
READABLE_FORMATS = (1, 2, 3, 4)
DURABILITY = ("full", "fast")


def get_meta(txn: Any, db: Any, name: bytes) -> Any:
    """The decoded ``meta`` record ``name``; a missing one means a damaged index."""
    raw = txn.get(name, db=db)
    if raw is None:
        raise CorruptIndexError(f"meta record {name.decode()!r} is missing; the index is damaged")
    return unpack_meta(raw, name.decode())
