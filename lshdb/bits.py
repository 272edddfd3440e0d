"""Bit mixing shared by storage and hashing: the splitmix64 finaliser, pure numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["mix64", "mix64_int", "MIX_CONSTANTS"]

_M1, _M2, _MASK64 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xFFFFFFFFFFFFFFFF
MIX_CONSTANTS = (_M1, _M2, _MASK64)  # for loops that inline mix64_int
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)
_MIX1, _MIX2 = np.uint64(_M1), np.uint64(_M2)


def mix64(z: np.ndarray, copy: bool = True) -> np.ndarray:
    """The splitmix64 finaliser, vectorised over a uint64 array (wraps modulo 2**64).

    Works on a copy in place (on ``z`` itself, a uint64 array, when ``copy`` is False);
    array arithmetic wraps silently, so no ``errstate`` (whose set-up cost dominated the
    small arrays of a single query)."""
    z = np.array(z, dtype=np.uint64, copy=copy)
    z ^= z >> _S30
    z *= _MIX1
    z ^= z >> _S27
    z *= _MIX2
    z ^= z >> _S31
    return z


def mix64_int(z: int) -> int:
    """:func:`mix64` on one Python integer (cheaper than numpy for a handful of values)."""
    z ^= z >> 30
    z = (z * _M1) & _MASK64
    z ^= z >> 27
    z = (z * _M2) & _MASK64
    return z ^ (z >> 31)
