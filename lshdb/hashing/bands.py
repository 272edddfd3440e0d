"""MinHash banding: :func:`band_keys` (``b`` bands of ``r`` signature columns, each hashed to
one 8-byte key) and the hash family over it, ``L = b`` tables of ``k = r`` values.

Two schemes hash a band. Scheme 1 chains the band's values through splitmix64, one after
the other; scheme 2, which new indexes use, mixes every value with a constant of its
position at once and folds each band's mixed values with XOR, so a query's keys take a
dozen numpy calls rather than ``b * r`` sequential steps (format 4 marks an index that
uses it). Either way equal bands give equal keys and unequal ones collide with
probability about ``2**-64``; dedup keeps scheme 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..bits import MIX_CONSTANTS, mix64
from ..errors import CorruptIndexError, InvalidParameterError, InvalidVectorError
from ..storage.codec import decode_array, encode_array
from .families import Family
from .minhash_oph import seed_key

__all__ = ["MinHashBands", "band_keys"]

_U64 = np.uint64
_BAND_SALT = 0xBB67AE8584CAA73B  # the seed of the band salts (scheme 1)
_POSITION_SALT = 0x3C6EF372FE94F82B  # the seed of the position constants (scheme 2)
SCHEMES = (1, 2)
_BAND_BLOCK = 1 << 15  # band keys computed per block


class MinHashBands(Family):
    """Banding of MinHash signatures: ``L = b`` tables of ``k = r`` signature values."""

    name = "minhash"
    metric = "jaccard"
    max_k: ClassVar[int] = 1024

    def __init__(self, dim: int, k: int, L: int, seed: int = 0, scheme: int = 2) -> None:
        super().__init__(dim, k, L, seed)
        if k * L > dim:
            raise InvalidParameterError(f"{L} bands of {k} rows exceed num_perm {dim}")
        if scheme not in SCHEMES:
            raise CorruptIndexError(f"unknown band key scheme {scheme!r}")
        self.scheme = scheme
        self._tables = np.arange(L)
        self._tables.flags.writeable = False

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return band_keys(np.asarray(X), self.L, self.k, seed=self.seed, scheme=self.scheme)

    def probe(self, x: np.ndarray, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
        # bands are not multi-probed; one row skips the blocked batch path
        if self.scheme == 2:  # (validated where the family was made)
            return self._tables, _xor_keys(x[None, :], self.L, self.k, self.seed)[0]
        return self._tables, band_keys(x[None, :], self.L, self.k, self.seed, self.scheme)[0]

    def params(self) -> dict[str, Any]:
        p = {**super().params(), "check": encode_array(np.array([self.dim, self.k, self.L]))}
        if self.scheme != 1:  # (an index without it predates scheme 2)
            p["keys"] = self.scheme
        return p

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bands": self.L, "rows": self.k}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> MinHashBands:
        check = decode_array(p["check"], "band shape")
        if check.tolist() != [dim, p["k"], p["L"]]:
            raise CorruptIndexError("stored band parameters disagree with num_perm")
        return cls(dim, p["k"], p["L"], p["seed"], p.get("keys", 1))


def band_keys(signatures: np.ndarray, b: int, r: int, seed: int = 0,
              scheme: int = 1) -> np.ndarray:
    """One 64-bit key per band: band j hashes columns ``j*r .. j*r + r - 1``.

    Scheme 1: each band's key chain starts from a value salted with the band number, so
    equal values in two different bands give different keys. Scheme 2: value ``t`` of the
    signature is mixed with position ``t``'s constant, and a band's key is the mix of the
    XOR of its mixed values. Columns past ``b * r`` are unused.

    Returns
    -------
    (n, b) uint64

    Raises
    ------
    InvalidParameterError
        ``b`` or ``r`` below 1, or ``b * r`` more than the signature's columns.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.dtype.kind not in "iu":
        raise InvalidVectorError(f"signatures must be a 2-d integer array; found {sig.shape} {sig.dtype}")
    for name, v in (("b", b), ("r", r)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidParameterError(f"{name} must be an int >= 1; found {v!r}")
    if b * r > sig.shape[1]:
        raise InvalidParameterError(
            f"b * r = {b * r} exceeds the signature's {sig.shape[1]} columns")
    if scheme == 2:
        return _xor_keys(sig, b, r, seed)
    if scheme != 1:
        raise InvalidParameterError(f"scheme must be 1 or 2; found {scheme!r}")
    salt = _band_salts(b, seed)
    if len(sig) <= 2:  # a query: Python integers beat 6 r numpy calls on tiny arrays
        out = np.empty((len(sig), b), dtype=_U64)
        m1, m2, mask = MIX_CONSTANTS  # mix64_int, inlined: a query runs it b * r times
        for i, row in enumerate(sig[:, :b * r].astype(_U64).tolist()):
            chain: list[int] = []
            for j in range(b):
                k = salt[j]
                for v in row[j * r : j * r + r]:
                    z = k ^ v
                    z ^= z >> 30
                    z = (z * m1) & mask
                    z ^= z >> 27
                    z = (z * m2) & mask
                    k = z ^ (z >> 31)
                chain.append(k)
            out[i] = chain
        return out
    out = np.empty((len(sig), b), dtype=_U64)
    step = max(1, _BAND_BLOCK // b)  # rows per block: a block's chain stays in cache
    for lo in range(0, len(sig), step):
        block = sig[lo:lo + step, :b * r]
        # column t of every band, contiguous: (r, rows, b)
        cols = block.reshape(len(block), b, r).transpose(2, 0, 1).astype(_U64, order="C")
        keys = out[lo:lo + step]
        keys[:] = salt
        for t in range(r):
            keys ^= cols[t]
            mix64(keys, copy=False)
    return out


_salt_cache: dict[tuple[int, int], list[int]] = {}


def _band_salts(b: int, seed: int) -> list[int]:
    """Each band's first chain value (cached: a query needs them every time)."""
    key = (int(b), int(seed))
    salts = _salt_cache.get(key)
    if salts is None:
        salts = _salt_cache[key] = mix64(np.arange(b, dtype=_U64) + seed_key(seed, _BAND_SALT)).tolist()
    return salts


_position_cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _xor_keys(sig: np.ndarray, b: int, r: int, seed: int) -> np.ndarray:
    """Scheme 2 of :func:`band_keys`."""
    key = (b, r, int(seed))
    cached = _position_cache.get(key)
    if cached is None:
        consts = mix64(np.arange(b * r, dtype=_U64) + seed_key(seed, _POSITION_SALT))
        cached = _position_cache[key] = (consts, np.arange(0, b * r, r))
    consts, starts = cached
    if len(sig) == 1:  # a query: no blocks, no output buffer to fill
        z = sig[:, :b * r].astype(_U64)
        z ^= consts
        mix64(z, copy=False)
        return mix64(np.bitwise_xor.reduceat(z, starts, axis=1), copy=False)
    out = np.empty((len(sig), b), dtype=_U64)
    step = max(1, _BAND_BLOCK // r)  # rows per block: the mixed values stay in cache
    for lo in range(0, len(sig), step):
        z = sig[lo:lo + step, :b * r].astype(_U64)
        z ^= consts
        mix64(z, copy=False)
        keys = np.bitwise_xor.reduceat(z, starts, axis=1)
        out[lo:lo + step] = mix64(keys, copy=False)
    return out
