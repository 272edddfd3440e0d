"""One-permutation MinHash (``mode="oph"``, the default, for speed).

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

Thread safety: all functions are pure (the probe cache is filled idempotently).
"""

from __future__ import annotations

import numpy as np

from ..bits import mix64, mix64_int
from ..errors import InvalidParameterError
from .tokensets import check_csr, check_num_perm

__all__ = ["oph_signatures", "seed_key"]

_U64 = np.uint64
_U32 = np.uint32
_TOKEN_SALT = 0x9E3779B97F4A7C15  # the seeds of the oph token mix, rounds and probes
_ROUND_SALT = 0xC2B2AE3D27D4EB4F
_PROBE_SALT = 0x6A09E667F3BCC909
_VALUE_BITS = 27  # oph values: 5 bits of round number, then 27 bits of hash
_VALUE_MASK = (1 << _VALUE_BITS) - 1
_MAX_ROUNDS = 31  # so that no value equals the empty marker
_EMPTY = np.uint32(0xFFFFFFFF)
_DOC_BLOCK = 1 << 11  # oph: sets per block (keeps the densification loop in cache) ...
_OPH_TOKENS = 1 << 17  # ... and tokens per block (keeps each round's arrays near the cache)


def seed_key(seed: int, salt: int) -> np.uint64:
    """A 64-bit key mixed from ``seed`` and a salt (one per use of the seed)."""
    return _U64(mix64_int((seed ^ salt) & 0xFFFFFFFFFFFFFFFF))  # (numpy costs ~15 us here)


def _reduce(v: np.ndarray, k: int) -> np.ndarray:
    """Map uniform 64-bit values to 0..k-1 through their high 32 bits (multiply-shift; for a
    power of two this is just the top bits)."""
    if k == 1:
        return np.zeros(np.shape(v), dtype=np.int64)
    if k & (k - 1) == 0:
        return (v >> _U64(64 - (k.bit_length() - 1))).view(np.int64)
    return (((v >> _U64(32)) * _U64(k)) >> _U64(32)).view(np.int64)


_PROBE_COLUMNS = 64  # probe attempts precomputed per (num_perm, seed)
_probe_cache: dict[tuple[int, int], np.ndarray] = {}


def _probes(k: int, seed: int, attempts: np.ndarray | int, bins: np.ndarray) -> np.ndarray:
    """Probe ``p(bin, attempt)`` in 0..k-1: a fixed function of the bin, attempt and seed."""
    v = (bins.astype(_U64) << _U64(32)) | np.asarray(attempts, dtype=_U64)
    return _reduce(mix64(v ^ seed_key(seed, _PROBE_SALT)), k)


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
    ab = mix64(np.arange(2 * rounds, dtype=_U64) + seed_key(seed, _ROUND_SALT))
    return ab[:rounds] | _U64(1), ab[rounds:]


def _sketch_block(hashes: np.ndarray, sizes: np.ndarray, k: int, seed: int, rounds: int
                  ) -> np.ndarray:
    n = len(sizes)
    sig = np.full(n * k, _EMPTY, dtype=_U32)
    owner = np.repeat(np.arange(n, dtype=np.int64), sizes)
    base = owner * k
    v0 = mix64(hashes.astype(_U64, copy=False) ^ seed_key(seed, _TOKEN_SALT), copy=False)
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
        A CSR of 64-bit token hashes (e.g. :func:`lshdb.hashing.shingles.shingle_hashes`): set i is
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
    k = check_num_perm(num_perm)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) \
            or not 1 <= rounds <= _MAX_ROUNDS:
        raise InvalidParameterError(f"rounds must be an int in 1..{_MAX_ROUNDS}; found {rounds!r}")
    offsets, hashes = check_csr(offsets, hashes)
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
