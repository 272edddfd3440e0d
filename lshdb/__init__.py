"""lshdb: a persistent, on-disk locality-sensitive-hashing index.

Workflow: ``create`` an index for a metric and dimension (or ``open`` an existing one), add
vectors through a ``writer()`` transaction, ``query`` for the nearest stored items with exact
distances. The docs/ folder has the user guide, the command line, tuning and guarantees.
"""

from __future__ import annotations

from . import errors
from .errors import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateKeyError,
    FormatVersionError,
    IndexClosedError,
    IndexExistsError,
    InputFormatError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    LockTimeoutError,
    LshdbError,
    NotAnIndexError,
    ReadOnlyError,
    ServerError,
    StorageError,
    TuningError,
)
from .hashing import families, theory
from .index.index import FORMAT_VERSION, Index, Writer, check, create, open
from .index.reader import Reader
from .serve.client import Client, connect


def tune(index: Index, target_recall: float = 0.9, k: int = 10, n_queries: int = 200,
         seed: int = 0, apply: bool = False) -> dict:  # type: ignore[type-arg]
    """Measure an index's recall/speed frontier and choose query settings (see lshdb.tuner)."""
    from .index.tune import tune as _tune

    return _tune(index, target_recall, k, n_queries, seed, apply)

__version__ = "0.1.0"

__all__ = [
    "__version__", "FORMAT_VERSION", "create", "open", "connect", "tune", "Index", "Writer",
    "Reader", "Client",
    "errors", "families", "theory", "check",
    "LshdbError", "InvalidParameterError", "InvalidVectorError", "DimensionMismatchError",
    "InvalidKeyError", "DuplicateKeyError", "KeyExistsError", "KeyNotFoundError",
    "NotAnIndexError", "IndexExistsError", "FormatVersionError", "CorruptIndexError",
    "ReadOnlyError", "LockTimeoutError", "IndexClosedError", "InputFormatError", "TuningError",
    "ServerError", "StorageError",
]
