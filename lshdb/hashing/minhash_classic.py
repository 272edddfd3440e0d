"""Classic MinHash (``mode="classic"``, datasketch-compatible).

``mode="classic"`` (datasketch-compatible)
    ``num_perm`` affine permutations of 32-bit token hashes, bit-identical to
    ``datasketch.MinHash(num_perm, seed, scheme=...).hashvalues`` for the same tokens:
    ``"affine32"`` (datasketch 2's default: MurmurHash3 fmix32 of the token hash, then
    ``a * h + b mod 2**32``, uint32), ``"affine64"`` (the same over SHA-1 64-bit token
    hashes, uint64) and ``"legacy"`` (datasketch before 2.0: ``((a * h + b) mod 2**64 mod
    (2**61 - 1)) & (2**32 - 1)``, uint64), with ``a`` and ``b`` drawn from
    ``np.random.RandomState(seed)`` as datasketch draws them.

Thread safety: all functions are pure; concurrent calls are safe.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError
from .tokensets import check_csr, check_num_perm

__all__ = ["SCHEMES", "classic_permutations", "classic_signatures", "classic_signatures_csr",
           "check_scheme", "token_hash"]

SCHEMES = ("affine32", "affine64", "legacy")
_U64 = np.uint64
_U32 = np.uint32
_MERSENNE = _U64((1 << 61) - 1)
_MAX32 = _U64((1 << 32) - 1)
_TOKEN_BLOCK = 1 << 15  # tokens per (tokens x num_perm) block


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`."""
    if scheme not in SCHEMES:
        raise InvalidParameterError(f"scheme must be one of {', '.join(SCHEMES)}; found {scheme!r}")
    return scheme


def classic_permutations(num_perm: int = 128, seed: int = 1, scheme: str = "affine32"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` permutation parameters datasketch draws for ``(num_perm, seed, scheme)``."""
    k = check_num_perm(num_perm)
    gen = np.random.RandomState(seed)
    if check_scheme(scheme) == "legacy":
        ab = np.array([(gen.randint(1, _MERSENNE, dtype=_U64), gen.randint(0, _MERSENNE, dtype=_U64))
                       for _ in range(k)], dtype=_U64).reshape(k, 2)
        return ab[:, 0].copy(), ab[:, 1].copy()
    width, dtype = (32, _U32) if scheme == "affine32" else (64, _U64)
    a = gen.randint(0, 1 << (width - 1), k, dtype=dtype) * dtype(2) + dtype(1)
    b = gen.randint(0, 1 << width, k, dtype=dtype)
    return a, b


def _fmix(h: np.ndarray, width: int) -> np.ndarray:
    """MurmurHash3's finaliser (datasketch's pre-mix), wrapping modulo 2**width."""
    consts: tuple[Any, ...]
    if width == 32:
        consts = (_U32(16), _U32(0x85EBCA6B), _U32(13), _U32(0xC2B2AE35), _U32(16))
    else:
        consts = (_U64(33), _U64(0xFF51AFD7ED558CCD), _U64(33), _U64(0xC4CEB9FE1A85EC53), _U64(33))
    s1, m1, s2, m2, s3 = consts
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def classic_signatures_csr(offsets: np.ndarray, token_hashes: np.ndarray, num_perm: int = 128,
                           seed: int = 1, scheme: str = "affine32") -> np.ndarray:
    """Classic MinHash of sets of pre-hashed tokens, bit-identical to datasketch.

    ``token_hashes`` are the values datasketch's ``hashfunc`` returns for the tokens
    (``sha1_hash32`` for ``affine32`` and ``legacy``, ``sha1_hash64`` for ``affine64``; see
    :func:`lshdb.hashing.shingles.shingle_token_hashes`), set i being
    ``token_hashes[offsets[i]:offsets[i + 1]]``. Row i equals
    ``datasketch.MinHash(num_perm, seed, hashfunc=<those values>, scheme=scheme).hashvalues``.

    Returns
    -------
    (n, num_perm) uint32 for ``affine32``, uint64 otherwise.

    Raises
    ------
    InvalidVectorError
        An empty set, a malformed CSR, or a token hash too wide for the scheme.
    InvalidParameterError
        ``num_perm`` out of range or an unknown scheme.
    """
    k = check_num_perm(num_perm)
    offsets, token_hashes = check_csr(offsets, token_hashes)
    a, b = classic_permutations(k, seed, check_scheme(scheme))
    wide = scheme == "affine64"
    if len(token_hashes) and not wide and int(token_hashes.max()) >= 1 << 32:
        raise InvalidVectorError(f"scheme {scheme!r} takes 32-bit token hashes; found "
                                 f"{int(token_hashes.max())}")
    if len(token_hashes) and token_hashes.dtype.kind == "i" and int(token_hashes.min()) < 0:
        raise InvalidVectorError("token hashes must be non-negative")
    dtype = _U32 if scheme == "affine32" else _U64
    n = len(offsets) - 1
    out = np.full((n, k), np.iinfo(dtype).max, dtype=dtype)
    total = len(token_hashes)
    for t0 in range(0, total, _TOKEN_BLOCK):
        t1 = min(total, t0 + _TOKEN_BLOCK)
        hv = token_hashes[t0:t1].astype(dtype)[:, None]
        if scheme == "legacy":
            phv = ((hv * a + b) % _MERSENNE) & _MAX32
        else:
            phv = _fmix(hv, 64 if wide else 32) * a + b
        d0 = int(np.searchsorted(offsets, t0, side="right")) - 1
        d1 = int(np.searchsorted(offsets, t1 - 1, side="right"))
        starts = np.maximum(offsets[d0:d1], t0) - t0
        np.minimum(out[d0:d1], np.minimum.reduceat(phv, starts, axis=0), out=out[d0:d1])
    return out


def token_hash(token: Any, wide: bool, what: str, row: int, noun: str) -> int:
    """A token's hash as datasketch takes it: SHA-1 of str/bytes (32 or 64 bits), an int
    as it is."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    if isinstance(token, (bytes, bytearray, memoryview)):
        digest = hashlib.sha1(token).digest()
        return struct.unpack("<Q" if wide else "<I", digest[:8 if wide else 4])[0]
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        return int(token)
    raise InvalidVectorError.at_row(
        what, row, f"holds a {type(token).__name__} token; tokens are str, bytes or int "
        "(pre-hashed)", noun)


def classic_signatures(token_sets: Iterable[Iterable[Any]], num_perm: int = 128, seed: int = 1,
                       scheme: str = "affine32") -> np.ndarray:
    """Classic MinHash of token sets, bit-identical to ``datasketch.MinHash``.

    Parameters
    ----------
    token_sets : iterable of iterables
        One iterable of tokens per set. A ``str`` token is encoded as UTF-8 and a ``bytes``
        token is used as is, then hashed like datasketch's default ``sha1_hash32`` (or
        ``sha1_hash64`` for ``affine64``): row i then equals
        ``MinHash(num_perm, seed, scheme=scheme)`` updated with those bytes (datasketch
        itself takes bytes only; ``s.encode("utf-8")`` is what its documentation does). An
        ``int`` token, or a whole set given as a numpy integer array, is taken as an
        already-computed token hash (e.g. a ``sha1_hash32`` value): this is the fast path.
    num_perm, seed, scheme
        As for ``datasketch.MinHash`` (its defaults: 128, 1, ``"affine32"``).

    Returns
    -------
    (n, num_perm) uint32 for ``affine32``, uint64 otherwise.

    Raises
    ------
    InvalidVectorError
        An empty set (its document number is named), a token of another type, or a
        token hash too wide for the scheme.
    """
    check_scheme(scheme)
    wide = scheme == "affine64"
    parts, sizes = [], []
    for i, tokens in enumerate(token_sets):
        if isinstance(tokens, np.ndarray):
            if tokens.dtype.kind not in "iu":
                raise InvalidVectorError(f"set {i}: a token-hash array must be integers; found "
                                         f"{tokens.dtype}")
            arr = tokens.ravel().astype(_U64)
        elif isinstance(tokens, (str, bytes)):
            raise InvalidVectorError(f"set {i}: expected an iterable of tokens, not one "
                                     f"{type(tokens).__name__}")
        else:
            arr = np.fromiter((token_hash(t, wide, "token_sets", i, "set") for t in tokens),
                              dtype=_U64)
        parts.append(arr)
        sizes.append(len(arr))
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    hashes = np.concatenate(parts) if parts else np.zeros(0, _U64)
    return classic_signatures_csr(offsets, hashes, num_perm, seed, scheme)
