"""Pseudo-random rotations by fast Walsh-Hadamard transforms (FALCONN's construction):
``H D_R ... H D_1 z`` with random sign diagonals ``D_i``, in a fixed evaluation order so that
rounding, and so every bucket decision, is the same for a row alone or in any batch."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError

__all__ = ["rotation_dim", "fwht", "fwht0", "rotate", "pad_scaled"]


def rotation_dim(dim: int) -> int:
    """``d'``: the smallest power of two >= ``dim`` (the rotations' dimension)."""
    return 1 << max(0, int(dim) - 1).bit_length()


def fwht(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform along ``axis`` (a power-of-two length).

    Returns a new float array of ``x``'s shape; multiply by ``n**-0.5`` for the orthogonal
    transform. See :func:`fwht0` for the evaluation order (fixed, so rounding is too).

    Raises
    ------
    InvalidParameterError
        If the axis length is not a power of two.
    """
    a = np.asarray(x)
    n = a.shape[axis]
    if n < 1 or n & (n - 1):
        raise InvalidParameterError(f"fwht needs a power-of-two length; found {n}")
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    moved = np.array(np.moveaxis(a, axis, 0), dtype=dtype, order="C", copy=True)
    return np.moveaxis(fwht0(moved), 0, axis)


def fwht0(buf: np.ndarray) -> np.ndarray:
    """The transform along axis 0 of a C-contiguous float array (``buf`` is scratch space).

    The transformed axis is the *outer* one, so each butterfly level is one ``np.add`` and
    one ``np.subtract`` over a ``(n / 2h, h * rest)`` view whose inner loop runs over every
    other axis at once: long, contiguous loops for a batch and for a single vector alike.
    Levels go in the order h = 1, 2, 4, ..., each a plain IEEE add or subtract per element.
    """
    n = buf.shape[0]
    src = buf.reshape(n, -1)
    dst = np.empty_like(src)
    rest = src.shape[1]
    h = 1
    while h < n:
        s = src.reshape(n // (2 * h), 2, h * rest)
        d = dst.reshape(n // (2 * h), 2, h * rest)
        np.add(s[:, 0], s[:, 1], out=d[:, 0])
        np.subtract(s[:, 0], s[:, 1], out=d[:, 1])
        src, dst = dst, src
        h *= 2
    return src.reshape(buf.shape)


def rotate(Z: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``H D_R ... H D_1 z`` (unnormalised) along axis 0.

    ``Z`` is ``(d', ...)`` and ``signs`` is ``(R, d', ...)``, broadcastable against it: with
    ``Z = Xt[:, :, None]`` (``(d', m, 1)``, rows as columns) and signs ``(R, d', 1, F)``
    the result is ``(d', m, F)``, every row under every function.
    """
    Y = np.ascontiguousarray(Z * signs[0])
    for r in range(signs.shape[0]):
        if r:
            Y *= signs[r]
        Y = fwht0(Y)
    return Y


def pad_scaled(X: np.ndarray, dp: int) -> np.ndarray:
    """``(d', m)`` float32: rows as columns, each scaled by an exact power of two (so that
    max |x| lies in [0.5, 1) and nothing overflows) and padded with zeros to ``d'``."""
    A = np.asarray(X)
    if A.dtype.kind != "f":
        A = A.astype(np.float64)
    top = np.abs(A).max(axis=1, keepdims=True) if A.shape[1] else np.zeros((len(A), 1))
    _, exp = np.frexp(top)
    scaled = np.ldexp(A, -exp.astype(np.int32))  # exact: a power of two (barring underflow)
    out = np.zeros((dp, A.shape[0]), dtype=np.float32)
    out[: A.shape[1]] = scaled.T
    return out
