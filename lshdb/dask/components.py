"""Connected components on the cluster: union-find per partition, folded in a tree.

Each partition's verified pairs become a forest, ``(nodes, roots)`` with every node that
has an edge and the smallest node of its component (:func:`forest`, the single process's
:func:`lshdb.text.dedup.connected_components` on the partition's edges). Two forests merge by
treating each ``node -> root`` as an edge and running union-find again; :func:`fold` merges
them ``split_every`` at a time in a tree of tasks, so no step holds more than the nodes of
the clusters (never the edges, and nothing on the client). Roots are the smallest document
of each component, which is how the single process numbers its clusters.

Thread safety: pure functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..text.dedup import connected_components

__all__ = ["forest", "merge", "fold", "members_by_root", "clusters_frame"]

_U64 = np.uint64


def forest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, roots)`` of the graph with edges ``(a[t], b[t])``: nodes sorted, each
    node's root the smallest node of its component."""
    a, b = np.asarray(a, dtype=_U64), np.asarray(b, dtype=_U64)
    nodes = np.unique(np.concatenate((a, b)))
    root = connected_components(len(nodes), np.searchsorted(nodes, a), np.searchsorted(nodes, b))
    return nodes, nodes[root]


def merge(*forests: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The forest of the union of the forests' graphs."""
    if not forests:
        return np.zeros(0, _U64), np.zeros(0, _U64)
    return forest(np.concatenate([f[0] for f in forests]), np.concatenate([f[1] for f in forests]))


def fold(leaves: list[Any], split_every: int = 8) -> Any:
    """One delayed forest from many, merged ``split_every`` at a time on the workers."""
    import dask

    level = list(leaves)
    if not level:
        return dask.delayed(merge, pure=True)()
    while len(level) > 1:
        level = [dask.delayed(merge, pure=True)(*level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    if len(leaves) == 1:
        return dask.delayed(merge, pure=True)(level[0])
    return level[0]


def members_by_root(ids: np.ndarray, keys: list[Any], roots: tuple[np.ndarray, np.ndarray],
                    n_parts: int) -> list[tuple[np.ndarray, np.ndarray, list[Any]]]:
    """The clustered documents among ``ids`` (with their keys), split by the partition of
    their cluster's root: ``(roots, ids, keys)`` for each partition."""
    nodes, root = roots
    at = np.minimum(np.searchsorted(nodes, ids), max(len(nodes) - 1, 0))
    hit = np.flatnonzero(nodes[at] == ids) if len(nodes) else np.zeros(0, np.int64)
    r = root[at[hit]]
    dest = (r >> _U64(32)).astype(np.int64)
    out = []
    for c in range(n_parts):
        sel = hit[dest == c]
        out.append((root[at[sel]], ids[sel], [keys[i] for i in sel.tolist()]))
    return out


def clusters_frame(roots: tuple[np.ndarray, np.ndarray],
                   *pieces: tuple[np.ndarray, np.ndarray, list[Any]]) -> Any:
    """The clusters whose root lies in one partition: ``cluster`` (the rank of its root among
    all roots, i.e. numbered by first document), ``size`` and ``keys`` in input order."""
    import pandas as pd

    r = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, _U64)
    ids = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, _U64)
    keys = [k for p in pieces for k in p[2]]
    ids, first = np.unique(ids, return_index=True)  # a document known to several partitions
    r = r[first]
    keys = [keys[i] for i in first.tolist()]
    order = np.lexsort((ids, r))
    r = r[order]
    keys = [keys[i] for i in order.tolist()]
    all_roots = roots[0][roots[0] == roots[1]]  # a root is its own root; sorted
    starts = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1]))) if len(r) else \
        np.zeros(0, np.int64)
    sizes = np.diff(np.append(starts, len(r)))
    return pd.DataFrame({
        "cluster": np.searchsorted(all_roots, r[starts]).astype(np.int64),
        "size": sizes.astype(np.int64),
        "keys": pd.Series([keys[s:s + n] for s, n in zip(starts.tolist(), sizes.tolist())],
                          dtype=object)})
