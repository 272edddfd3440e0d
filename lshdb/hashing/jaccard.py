"""Exact Jaccard similarity of hash sets: one pair, or many pairs from a CSR at once.

These are the ground truth that MinHash estimates and the check that near-duplicate
detection applies to its candidates. Sets are arrays of 64-bit hashes (for example the
shingle hashes of :func:`lshdb.hashing.shingles.shingle_hashes`, whose Jaccard similarity equals that of
the shingle strings up to hash collisions). The similarity of two empty sets is undefined
and raises :class:`~lshdb.errors.InvalidVectorError`.

Thread safety: :class:`JaccardOracle` is read-only after construction; all calls are safe
to run concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidVectorError

__all__ = ["exact_jaccard", "JaccardOracle", "pair_jaccard"]


def exact_jaccard(a_hashes: np.ndarray | Sequence[int], b_hashes: np.ndarray | Sequence[int]
                  ) -> float:
    """Exact Jaccard similarity |A & B| / |A | B| of two hash sets (repeats are ignored).

    Raises
    ------
    InvalidVectorError
        Both sets are empty (the similarity is undefined).
    """
    a = np.unique(np.asarray(a_hashes))
    b = np.unique(np.asarray(b_hashes))
    union = len(np.union1d(a, b))
    if union == 0:
        raise InvalidVectorError("the Jaccard similarity of two empty sets is undefined")
    return float(len(a) + len(b) - union) / union


class JaccardOracle:
    """Exact Jaccard similarity of pairs of sets from a CSR of sorted distinct hashes.

    The lookup keys are prepared once, so many calls are cheap. Each pair's smaller set is
    looked up in the larger one with one vectorised ``searchsorted`` over the keys
    ``set * V + rank`` (``rank`` a hash's rank among the ``V`` distinct hashes; they are
    sorted within each set), in blocks of about 4 million lookups.

    Parameters
    ----------
    offsets, hashes
        As returned by :func:`lshdb.hashing.shingles.shingle_hashes` (each slice sorted and distinct).

    Thread safety: read-only after construction; calls may run concurrently.
    """

    def __init__(self, offsets: np.ndarray, hashes: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)
        hashes = np.asarray(hashes)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[-1] != len(hashes):
            raise InvalidVectorError("offsets must be a 1-d array ending at len(hashes)")
        self.sizes = np.diff(self.offsets)
        n_sets = len(self.sizes)
        # ranks by one argsort (np.unique with a hash table is slower at this size)
        order = np.argsort(hashes)
        ranked = hashes[order]
        new = np.empty(len(ranked), dtype=np.int64)
        if len(ranked):
            new[0] = 0
            np.not_equal(ranked[1:], ranked[:-1], out=new[1:], casting="unsafe")
        self.rank = np.empty(len(ranked), dtype=np.int64)
        self.rank[order] = np.cumsum(new)
        self.V = max(int(self.rank.max()) + 1 if len(ranked) else 0, 1)
        if n_sets * self.V >= 1 << 62:
            raise InvalidVectorError("too many sets and distinct hashes for 64-bit pair keys")
        owner = np.repeat(np.arange(n_sets, dtype=np.int64), self.sizes)
        self.key = owner * self.V + self.rank
        if np.any(self.key[1:] <= self.key[:-1]):
            raise InvalidVectorError("each set's hashes must be sorted and distinct "
                                     "(as lshdb.hashing.shingles.shingle_hashes returns them)")

    def intersections(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``|A_i & B_j|`` for each pair (int64)."""
        i = np.asarray(i, dtype=np.int64).ravel()
        j = np.asarray(j, dtype=np.int64).ravel()
        if i.shape != j.shape:
            raise InvalidVectorError(f"i and j must have equal length; found {len(i)} and {len(j)}")
        n_sets = len(self.sizes)
        if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n_sets):
            raise InvalidVectorError(f"set numbers must be in 0..{n_sets - 1}")
        sizes, V, key = self.sizes, self.V, self.key
        small = np.where(sizes[i] <= sizes[j], i, j)
        large = np.where(sizes[i] <= sizes[j], j, i)
        inter = np.zeros(len(i), dtype=np.int64)
        look = sizes[small]
        ends = np.cumsum(look)
        lo = 0
        while lo < len(i):
            hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + (1 << 22), side="right"))
            hi = min(max(hi, lo + 1), len(i))
            cnt = look[lo:hi]
            pair = np.repeat(np.arange(hi - lo), cnt)
            pos = np.arange(len(pair)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            q = large[lo:hi][pair] * V + self.rank[self.offsets[small[lo:hi]][pair] + pos]
            if len(key):
                hit = key[np.minimum(np.searchsorted(key, q), len(key) - 1)] == q
                inter[lo:hi] = np.bincount(pair, weights=hit, minlength=hi - lo)
            lo = hi
        return inter

    def __call__(self, i: np.ndarray | Sequence[int], j: np.ndarray | Sequence[int]
                 ) -> np.ndarray:
        """Exact Jaccard similarity of each pair ``(i[t], j[t])`` (float64).

        Raises
        ------
        InvalidVectorError
            A pair of two empty sets, set numbers out of range, or mismatched ``i`` and ``j``.
        """
        i = np.asarray(i, dtype=np.int64).ravel()
        j = np.asarray(j, dtype=np.int64).ravel()
        inter = self.intersections(i, j)
        union = self.sizes[i] + self.sizes[j] - inter
        if np.any(union == 0):
            k = int(np.flatnonzero(union == 0)[0])
            raise InvalidVectorError(
                f"pair ({i[k]}, {j[k]}) has two empty sets: their Jaccard similarity is undefined")
        return inter / union


def pair_jaccard(offsets: np.ndarray, hashes: np.ndarray, i: np.ndarray | Sequence[int],
                 j: np.ndarray | Sequence[int]) -> np.ndarray:
    """Exact Jaccard similarity of many pairs of sets from a CSR of sorted distinct hashes.

    ``JaccardOracle(offsets, hashes)(i, j)``; build the oracle once to verify pairs in
    several calls.

    Raises
    ------
    InvalidVectorError
        A pair of two empty sets, unsorted sets, or mismatched ``i`` and ``j``.
    """
    return JaccardOracle(offsets, hashes)(i, j)
