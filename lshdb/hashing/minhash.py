"""MinHash signatures of sets, their Jaccard estimates, and LSH banding keys.

Two ways to sign a set, both with ``P[sig_a[j] == sig_b[j]] ~= J(A, B)`` for every column j:

``mode="oph"`` (the default, for speed)
    One-permutation hashing (Li, Owen and Zhang 2012) filled in rounds as in "fast similarity
    sketching" (Dahlgaard, Knudsen and Thorup 2017), then optimally densified (Shrivastava,
    ICML 2017). Each token's 64-bit hash is mixed once with the seed (splitmix64). In round
    ``r`` (``rounds`` of them, 24 by default) an affine map of that value, fixed by the seed
    and ``r``, places the token in one of ``num_perm`` bins with a 27-bit value; the value
    carries ``r`` in its top 5 bits, so a bin keeps the minimum of the earliest round that
    reached it, and later rounds only fill bins still empty. A set whose bins are all
    filled is final (later rounds cannot change it) and stops. A bin still empty after the
    last round borrows the value of the first non-empty bin along a probe sequence
    ``p(i, 1), p(i, 2), ...`` that depends only on the bin and the seed, never on the set.
    Every step is a fixed function of the token, so for every column j
    ``P[sig_a[j] == sig_b[j]] = J(A, B)`` (the winning placement of the union falls in the
    intersection with probability J; value collisions add about 2**-27). The estimator is
    unbiased, with a variance at or below classic MinHash's on all but the smallest sets
    (docs/performance.md has the measurements). Cost: at most ``rounds`` cheap placements per token instead
    of ``num_perm`` permutations; computed in bulk over a CSR of token hashes, one
    ``np.minimum.at`` per round and a vectorised probe loop for the empty bins of all sets
    together. Signatures are ``uint32``.

``mode="classic"`` (datasketch-compatible)
    ``num_perm`` affine permutations of 32-bit token hashes, bit-identical to
    ``datasketch.MinHash(num_perm, seed, scheme=...).hashvalues`` for the same tokens:
    ``"affine32"`` (datasketch 2's default: MurmurHash3 fmix32 of the token hash, then
    ``a * h + b mod 2**32``, uint32), ``"affine64"`` (the same over SHA-1 64-bit token
    hashes, uint64) and ``"legacy"`` (datasketch before 2.0: ``((a * h + b) mod 2**64 mod
    (2**61 - 1)) & (2**32 - 1)``, uint64), with ``a`` and ``b`` drawn from
    ``np.random.RandomState(seed)`` as datasketch draws them.

Banding (:func:`band_keys`) turns ``b`` bands of ``r`` columns into one 8-byte key per band;
:func:`lshdb.theory.optimal_bands` chooses ``(b, r)`` for a similarity threshold.

Thread safety: all functions are pure; concurrent calls are safe.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..bits import MIX_CONSTANTS, mix64, mix64_int
from ..errors import InvalidParameterError, InvalidVectorError
from .shingles import parse_shingle, shingle_hashes, shingle_token_hashes

__all__ = [
    "MODES",
    "SCHEMES",
    "oph_signatures",
    "classic_signatures",
    "classic_signatures_csr",
    "classic_permutations",
    "text_signatures",
    "estimate_jaccard",
    "band_keys",
]

MODES = ("oph", "classic")
SCHEMES = ("affine32", "affine64", "legacy")
_U64 = np.uint64
_U32 = np.uint32
_MERSENNE = _U64((1 << 61) - 1)
_MAX32 = _U64((1 << 32) - 1)
_TOKEN_BLOCK = 1 << 15  # classic: tokens per (tokens x num_perm) block
_TOKEN_SALT = 0x9E3779B97F4A7C15  # the seeds of the oph token mix, rounds, probes, bands
_ROUND_SALT = 0xC2B2AE3D27D4EB4F
_PROBE_SALT = 0x6A09E667F3BCC909
_BAND_SALT = 0xBB67AE8584CAA73B
_VALUE_BITS = 27  # oph values: 5 bits of round number, then 27 bits of hash
_VALUE_MASK = (1 << _VALUE_BITS) - 1
_MAX_ROUNDS = 31  # so that no value equals the empty marker
_EMPTY = np.uint32(0xFFFFFFFF)
_DOC_BLOCK = 1 << 11  # oph: sets per block (keeps the densification loop in cache) ...
_OPH_TOKENS = 1 << 17  # ... and tokens per block (keeps each round's arrays near the cache)
_BAND_BLOCK = 1 << 15  # band keys computed per block


def _check_num_perm(num_perm: int) -> int:
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) \
            or not 1 <= num_perm <= 1 << 16:
        raise InvalidParameterError(f"num_perm must be an int in 1..65536; found {num_perm!r}")
    return int(num_perm)


def _check_csr(offsets: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _key(seed: int, salt: int) -> np.uint64:
    return _U64(mix64_int((seed ^ salt) & 0xFFFFFFFFFFFFFFFF))  # (numpy costs ~15 us here)


def _reduce(v: np.ndarray, k: int) -> np.ndarray:
    """Map uniform 64-bit values to 0..k-1 through their high 32 bits (multiply-shift; for a
    power of two this is just the top bits)."""
    if k == 1:
        return np.zeros(np.shape(v), dtype=np.int64)
    if k & (k - 1) == 0:
        return (v >> _U64(64 - (k.bit_length() - 1))).view(np.int64)
    return (((v >> _U64(32)) * _U64(k)) >> _U64(32)).view(np.int64)


# -- one-permutation hashing -----------------------------------------------------------


_PROBE_COLUMNS = 64  # probe attempts precomputed per (num_perm, seed)
_probe_cache: dict[tuple[int, int], np.ndarray] = {}


def _probes(k: int, seed: int, attempts: np.ndarray | int, bins: np.ndarray) -> np.ndarray:
    """Probe ``p(bin, attempt)`` in 0..k-1: a fixed function of the bin, attempt and seed."""
    v = (bins.astype(_U64) << _U64(32)) | np.asarray(attempts, dtype=_U64)
    return _reduce(mix64(v ^ _key(seed, _PROBE_SALT)), k)


def _probe_steps(k: int, seed: int) -> np.ndarray:
    """``steps[t, i] = p(i, t + 1) - i`` for the first attempts (cached; replaced whole):
    the offset from an empty bin's cell to the cell its attempt ``t + 1`` reads."""
    steps = _probe_cache.get((k, seed))
    if steps is None:
        t = np.arange(1, _PROBE_COLUMNS + 1, dtype=np.int64)[:, None]
        bins = np.arange(k)
        steps = _probes(k, seed, t, bins[None, :]) - bins
        if len(_probe_cache) > 64:
            _probe_cache.clear()
        _probe_cache[(k, seed)] = steps
    return steps


def _densify(sig: np.ndarray, filled: np.ndarray, k: int, seed: int) -> None:
    """Optimal densification, in place: each empty bin takes the value of the first
    non-empty bin of its set along the probe sequence ``p(i, 1), p(i, 2), ...``."""
    todo = np.flatnonzero(~filled)  # intp: narrower index arrays are converted on every use
    if len(todo) == 0:
        return
    steps = _probe_steps(k, seed)
    col = todo & (k - 1) if k & (k - 1) == 0 else todo % k  # (a division is slow)
    attempt, few = 0, max(len(todo) >> 6, 256)
    while len(todo):
        if attempt < _PROBE_COLUMNS and len(todo) > few:
            # one attempt for many bins at a time while most bins still need one
            src = steps[attempt][col]
            src += todo
            attempt += 1
            hit = filled[src]
            got = np.flatnonzero(hit)
            sig[todo[got]] = sig[src[got]]
            miss = np.flatnonzero(~hit)
        else:
            # the few bins left (sets with few non-empty bins): many attempts per round,
            # from the table while it lasts
            if attempt < _PROBE_COLUMNS:
                src = todo[:, None] + steps[attempt:, col].T
                attempt = _PROBE_COLUMNS
            else:
                tries = np.arange(attempt + 1, attempt + 1 + _PROBE_COLUMNS)
                attempt += _PROBE_COLUMNS
                base = todo - col  # the set's first cell
                src = base[:, None] + _probes(k, seed, tries[None, :], col[:, None])
            hit = filled[src]
            first = hit.argmax(axis=1)
            got = np.flatnonzero(hit[np.arange(len(first)), first])
            sig[todo[got]] = sig[src[got, first[got]]]
            miss = np.flatnonzero(~hit.any(axis=1))
        todo, col = todo[miss], col[miss]


def _round_constants(seed: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers and offsets of the per-round affine maps (fixed by the seed)."""
    ab = mix64(np.arange(2 * rounds, dtype=_U64) + _key(seed, _ROUND_SALT))
    return ab[:rounds] | _U64(1), ab[rounds:]


def _sketch_block(hashes: np.ndarray, sizes: np.ndarray, k: int, seed: int, rounds: int
                  ) -> np.ndarray:
    n = len(sizes)
    sig = np.full(n * k, _EMPTY, dtype=_U32)
    owner = np.repeat(np.arange(n, dtype=np.int64), sizes)
    base = owner * k
    v0 = mix64(hashes.astype(_U64, copy=False) ^ _key(seed, _TOKEN_SALT), copy=False)
    mul, add = _round_constants(seed, rounds)
    # after rounds 0, 2, 5, 8, ..., a set is checked for completeness once it has placed 5 k
    # tokens (it needs at least k, and is seldom complete before ~k ln k); its tokens are
    # dropped when a quarter of those left belong to complete sets. Neither changes the
    # result: a complete set keeps its values.
    live = np.ones(n, dtype=bool)
    biggest, dead_tokens = int(sizes.max()), 0
    v = np.empty(len(v0), dtype=_U64)  # the round's buffers, shortened with the tokens
    value = np.empty(len(v0), dtype=_U32)
    for r in range(rounds):
        np.multiply(v0, mul[r], out=v)  # round r's placement: an affine map of the mixed hash
        v += add[r]
        cell = _reduce(v, k)
        cell += base
        # the round number in the top 5 bits: a bin keeps its earliest round's minimum
        value[:] = v  # the low 32 bits
        value &= _U32(_VALUE_MASK)
        value |= _U32(r << _VALUE_BITS)
        np.minimum.at(sig, cell, value)
        if r + 1 < rounds and (r % 3 == 2 or r == 0) and biggest * (r + 1) >= 5 * k:
            check = np.flatnonzero(live & (sizes * (r + 1) >= 5 * k))
            full = check[sig.reshape(n, k)[check].max(axis=1) != _EMPTY]
            live[full] = False
            if not live.any():
                break
            dead_tokens += int(sizes[full].sum())
            if dead_tokens * 4 > len(v0):
                keep = np.flatnonzero(live[owner])
                v0, owner, base = v0[keep], owner[keep], base[keep]
                v, value = v[:len(keep)], value[:len(keep)]
                dead_tokens = 0
    _densify(sig, sig != _EMPTY, k, seed)
    return sig.reshape(n, k)


def oph_signatures(offsets: np.ndarray, hashes: np.ndarray, num_perm: int = 128,
                   seed: int = 0, rounds: int = 24) -> np.ndarray:
    """One-permutation MinHash signatures (re-insertion rounds, optimal densification).

    Parameters
    ----------
    offsets : (n + 1,) int
    hashes : (offsets[-1],) uint64
        A CSR of 64-bit token hashes (e.g. :func:`lshdb.text.shingle_hashes`): set i is
        ``hashes[offsets[i]:offsets[i + 1]]``. Repeats within a set are harmless.
    num_perm : int
        Columns of the signature (bins).
    seed : int
        Keys the bin placements, the values and the probe sequences.
    rounds : int
        Placement rounds (1..31) before densification (1 is plain one-permutation hashing; see the
        module docstring). Part of the sketch's definition: signatures computed with
        different ``rounds`` are not comparable.

    Returns
    -------
    (n, num_perm) uint32

    Raises
    ------
    InvalidVectorError
        An empty set (it has no MinHash), or a malformed CSR.
    InvalidParameterError
        ``num_perm`` or ``rounds`` out of range.
    """
    k = _check_num_perm(num_perm)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) \
            or not 1 <= rounds <= _MAX_ROUNDS:
        raise InvalidParameterError(f"rounds must be an int in 1..{_MAX_ROUNDS}; found {rounds!r}")
    offsets, hashes = _check_csr(offsets, hashes)
    n = len(offsets) - 1
    out = np.empty((n, k), dtype=_U32)
    sizes = np.diff(offsets)
    # blocks of at most _DOC_BLOCK sets and, past the first set, _OPH_TOKENS tokens
    ends = np.searchsorted(offsets, offsets + _OPH_TOKENS, side="right") - 1
    lo = 0
    while lo < n:
        hi = min(n, lo + _DOC_BLOCK, max(lo + 1, int(ends[lo])))
        out[lo:hi] = _sketch_block(hashes[offsets[lo]:offsets[hi]], sizes[lo:hi], k, seed,
                                   int(rounds))
        lo = hi
    return out


# -- classic (datasketch-compatible) MinHash -------------------------------------------


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise InvalidParameterError(f"scheme must be one of {', '.join(SCHEMES)}; found {scheme!r}")
    return scheme


def classic_permutations(num_perm: int = 128, seed: int = 1, scheme: str = "affine32"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` permutation parameters datasketch draws for ``(num_perm, seed, scheme)``."""
    k = _check_num_perm(num_perm)
    gen = np.random.RandomState(seed)
    if _check_scheme(scheme) == "legacy":
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
    :func:`lshdb.text.shingle_token_hashes`), set i being
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
    k = _check_num_perm(num_perm)
    offsets, token_hashes = _check_csr(offsets, token_hashes)
    a, b = classic_permutations(k, seed, _check_scheme(scheme))
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


def _token_hash(token: Any, wide: bool, what: str, row: int, noun: str) -> int:
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
    _check_scheme(scheme)
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
            arr = np.fromiter((_token_hash(t, wide, "token_sets", i, "set") for t in tokens),
                              dtype=_U64)
        parts.append(arr)
        sizes.append(len(arr))
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    hashes = np.concatenate(parts) if parts else np.zeros(0, _U64)
    return classic_signatures_csr(offsets, hashes, num_perm, seed, scheme)


def text_signatures(texts: Sequence[str], shingle: str = "word:5", num_perm: int = 128,
                    mode: str = "oph", seed: int = 0, scheme: str = "affine32") -> np.ndarray:
    """Signatures of raw texts: shingle (:mod:`lshdb.text`), then sign.

    ``mode="oph"`` signs the 64-bit shingle hashes; ``mode="classic"`` signs the SHA-1
    token hashes of the shingle strings, so that row i equals datasketch's MinHash of
    ``[s.encode("utf-8") for s in word_shingles(texts[i], n)]`` (or ``char_shingles``).

    Raises
    ------
    InvalidVectorError
        A text with no shingles (no words); its number is named.
    InvalidParameterError
        An unknown mode, shingle spec or scheme.
    """
    kind, n = parse_shingle(shingle)
    if mode == "oph":
        offsets, hashes = shingle_hashes(texts, kind, n, distinct=False)
        return oph_signatures(offsets, hashes, num_perm, seed)
    if mode == "classic":
        width = 64 if _check_scheme(scheme) == "affine64" else 32
        offsets, tokens = shingle_token_hashes(texts, kind, n, width=width)
        return classic_signatures_csr(offsets, tokens, num_perm, seed, scheme)
    raise InvalidParameterError(f"mode must be 'oph' or 'classic'; found {mode!r}")


# -- estimates and bands ---------------------------------------------------------------


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float | np.ndarray:
    """Estimated Jaccard similarity: the fraction of equal signature columns.

    Two 1-d signatures give a float; a 2-d ``(n, k)`` matrix against a 1-d signature or
    against another ``(n, k)`` matrix gives ``(n,)`` row-wise estimates.

    Raises
    ------
    InvalidVectorError
        Signatures of different lengths or incompatible shapes.
    """
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.ndim == 1 and b.ndim == 2:
        a, b = b, a
    if a.shape[-1:] != b.shape[-1:] or a.ndim > 2 or b.ndim > 2 or (
            a.ndim == b.ndim == 2 and a.shape != b.shape):
        raise InvalidVectorError(f"signature shapes {a.shape} and {b.shape} do not match")
    if a.shape[-1] == 0:
        raise InvalidVectorError("signatures must have at least one column")
    eq = (a == b).mean(axis=-1)
    return float(eq) if eq.ndim == 0 else eq


def band_keys(signatures: np.ndarray, b: int, r: int, seed: int = 0) -> np.ndarray:
    """One 64-bit key per band: band j hashes columns ``j*r .. j*r + r - 1``.

    Each band's key chain starts from a value salted with the band number, so equal values
    in two different bands give different keys. Columns past ``b * r`` are unused.

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
        salts = _salt_cache[key] = mix64(np.arange(b, dtype=_U64) + _key(seed, _BAND_SALT)).tolist()
    return salts
