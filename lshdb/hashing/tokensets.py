"""Token sets in CSR form (``offsets``, ``hashes``) and ``num_perm``: the input checks both
MinHash modes share."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError

__all__ = ["check_num_perm", "check_csr"]


def check_num_perm(num_perm: int) -> int:
    """``num_perm`` as an int in 1..65536."""
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) \
            or not 1 <= num_perm <= 1 << 16:
        raise InvalidParameterError(f"num_perm must be an int in 1..65536; found {num_perm!r}")
    return int(num_perm)


def check_csr(offsets: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(offsets, hashes)``: offsets rise from 0 to ``len(hashes)``, no set empty."""
    offsets = np.asarray(offsets)
    hashes = np.asarray(hashes)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype.kind not in "iu":
        raise InvalidVectorError("offsets must be a 1-d integer array of length n + 1")
    if hashes.ndim != 1 or hashes.dtype.kind not in "iu":
        raise InvalidVectorError(f"token hashes must be a 1-d integer array; found {hashes.dtype}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(hashes) or np.any(np.diff(offsets) < 0):
        raise InvalidVectorError(
            f"offsets must rise from 0 to len(hashes) = {len(hashes)}; found {offsets[0]}..{offsets[-1]}")
    empty = np.flatnonzero(offsets[1:] == offsets[:-1])
    if len(empty):
        raise InvalidVectorError(
            f"set {int(empty[0])} is empty ({len(empty)} empty in all): an empty set has no "
            "MinHash; drop empty documents first")
    return offsets, hashes
