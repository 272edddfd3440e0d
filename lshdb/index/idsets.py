"""Sets of internal ids gathered from posting lists: distinct ids, their counts, repeats."""

from __future__ import annotations

import numpy as np

__all__ = ["union", "repeated"]


def union(ids: np.ndarray, n_rows: int, with_counts: bool = False
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted distinct ids (and how often each occurs): bitmap when dense, sort when sparse."""
    if len(ids) * 4 >= n_rows:
        if with_counts:
            c = np.bincount(ids, minlength=n_rows)
            u = np.flatnonzero(c)
            return u, c[u]
        m = np.zeros(n_rows, dtype=np.bool_)
        m[ids] = True
        return np.flatnonzero(m), None
    s = np.sort(ids)
    first = _run_starts(s)
    u = s[first]
    if not with_counts:
        return u, None
    starts = np.flatnonzero(first)
    return u, np.diff(np.append(starts, len(s)))


def repeated(s: np.ndarray, h: int) -> np.ndarray:
    """The distinct values that occur at least ``h`` times in the sorted array ``s``."""
    if len(s) < h:
        return s[:0]
    at = s[: len(s) - h + 1]
    cand = at[at == s[h - 1 :]]  # s[i] == s[i + h - 1]: s[i] starts a run of >= h
    return cand[_run_starts(cand)]


def _run_starts(s: np.ndarray) -> np.ndarray:
    """True where a sorted array's value differs from the one before (and at 0)."""
    first = np.empty(len(s), dtype=np.bool_)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return first
