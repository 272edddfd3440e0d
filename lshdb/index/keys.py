"""Batches of keys as a write receives them: a list, each key once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DuplicateKeyError, InvalidParameterError
from ..storage.codec import Key

__all__ = ["as_key_list", "check_unique"]


def as_key_list(keys: Iterable[Key]) -> list[Any]:
    """A batch of keys as a list (a single key is refused: it is not a batch)."""
    if isinstance(keys, (str, bytes, int)):
        raise InvalidParameterError(
            "keys must be a sequence of keys (one per vector), not a single key; wrap it in a list")
    if isinstance(keys, np.ndarray):
        return keys.tolist()  # type: ignore[no-any-return]
    return list(keys)


def check_unique(keys: Sequence[Key], packed: list[bytes]) -> None:
    """Refuse a batch that names a key twice."""
    if len(set(packed)) != len(packed):
        seen: set[bytes] = set()
        for k, p in zip(keys, packed):
            if p in seen:
                raise DuplicateKeyError(
                    f"key {k!r} appears more than once in the batch; keys must be unique")
            seen.add(p)
