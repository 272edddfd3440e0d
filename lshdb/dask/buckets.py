"""The band rounds of dedup on Dask: records split by key, bucket member lists, candidates.

:func:`split_records` cuts a partition's (band, key, document) records of a few bands over
the bucket tasks by key; :func:`bucket_members` (a bucket task) sends the sorted members of
every bucket of two or more documents to the partitions whose documents start its pairs;
:func:`candidates` (one task a partition) lists those pairs, every pair of a bucket as the
single process lists them, and deduplicates them. Documents are named ``p << 32 | row``
(:func:`part_of` gives ``p``).

Thread safety: pure functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..text.dedup import bucket_pairs

__all__ = ["split_records", "bucket_members", "candidates", "part_of"]

_U64 = np.uint64
_ROW_BITS = _U64(32)


def part_of(ids: np.ndarray) -> np.ndarray:
    """The partition of each document id."""
    return (ids >> _ROW_BITS).astype(np.int64)


def split_records(signed: dict[str, Any], j0: int, j1: int, m: int, *_after: Any
                  ) -> list[np.ndarray]:
    """Records (band, key, document) of bands ``j0..j1 - 1``, split by key over ``m`` buckets."""
    bk = signed["bkeys"][:, j0:j1]
    keys = bk.ravel()
    docs = np.repeat(signed["ids"], j1 - j0)
    band = np.tile(np.arange(j0, j1, dtype=_U64), len(bk))
    dest = (keys % _U64(m)).astype(np.int64)
    order = np.argsort(dest, kind="stable")
    rec = np.stack((band, keys, docs))[:, order]
    return np.split(rec, np.cumsum(np.bincount(dest, minlength=m))[:-1], axis=1)


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(a) == 0:
        return a, b
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.concatenate(([True], (a[1:] != a[:-1]) | (b[1:] != b[:-1])))
    return a[keep], b[keep]


def bucket_members(n_parts: int, *pieces: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The members of every bucket of two or more documents, sorted: to each partition, as
    ``(sizes, members)``, the buckets (from their first member of that partition on) whose
    pairs start there. Pairs are listed by the partition that verifies them, not here: a
    bucket of g documents travels as g ids, not g(g-1)/2 pairs."""
    rec = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), _U64)
    band, keys, docs = rec
    runs: list[np.ndarray] = []  # the member lists, one array each band
    sizes: list[np.ndarray] = []
    for j in np.unique(band).tolist():
        sel = np.flatnonzero(band == j)
        # a band's records arrive in document order (partitions in order, rows in order
        # within each): a stable sort by key gives the single process's (key, document)
        order = np.argsort(keys[sel], kind="stable")
        k, d = keys[sel][order], docs[sel][order]
        if len(k) < 2:
            continue
        starts = np.concatenate(([0], np.flatnonzero(k[1:] != k[:-1]) + 1))
        size = np.diff(np.append(starts, len(k)))
        big = size >= 2
        if big.any():
            inside = np.repeat(big, size)
            runs.append(d[inside])
            sizes.append(size[big])
    members = np.concatenate(runs) if runs else np.zeros(0, _U64)
    size = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    return _route_lists(n_parts, size, members)


def _route_lists(n_parts: int, size: np.ndarray, members: np.ndarray
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Send each member list (``size`` of them, laid end to end in ``members``, ascending
    within each) to every partition that owns a member of it but its last: the list's
    suffix from that partition's first member (its members are contiguous there)."""
    ends = np.cumsum(size)
    starts = ends - size
    run = np.repeat(np.arange(len(size)), size)
    part = part_of(members)
    first = np.ones(len(members), dtype=bool)
    first[1:] = (part[1:] != part[:-1]) | (run[1:] != run[:-1])
    first[ends - 1] = False  # a list's last member starts no pair
    first[starts] = True
    entry = np.flatnonzero(first)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    dest = part[entry]
    order = np.argsort(dest, kind="stable")
    entry, dest = entry[order], dest[order]
    bounds = np.searchsorted(dest, np.arange(n_parts + 1))
    for q in range(n_parts):
        e = entry[bounds[q] : bounds[q + 1]]
        length = ends[run[e]] - e
        take = np.repeat(e, length) + (np.arange(int(length.sum()))
                                       - np.repeat(np.cumsum(length) - length, length))
        out.append((length, members[take]))
    return out


def candidates(p: int, *pieces: Any) -> np.ndarray:
    """Partition ``p``'s distinct candidate pairs, (2, c) sorted by (a, b): every pair of
    a member list whose first document is one of ``p``'s."""
    lists = [x for x in pieces if isinstance(x, tuple)]
    size = np.concatenate([x[0] for x in lists]) if lists else np.zeros(0, np.int64)
    members = np.concatenate([x[1] for x in lists]) if lists else np.zeros(0, _U64)
    found_a, found_b = [np.zeros(0, _U64)], [np.zeros(0, _U64)]
    if len(size):
        run = np.repeat(np.arange(len(size), dtype=_U64), size)
        for x, y in bucket_pairs(members, run, lambda first: part_of(first) == p):
            found_a.append(x)
            found_b.append(y)
    a, b = _unique_pairs(np.concatenate(found_a), np.concatenate(found_b))
    return np.stack((a, b))
