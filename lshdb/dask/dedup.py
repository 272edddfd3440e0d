"""Near-duplicate detection on a Dask cluster, identical to the single-process dedup.

The single-process :func:`lshdb.text.dedup.dedup` keeps every pair of documents that share a
MinHash band bucket and whose similarity (exact, or the signature estimate) reaches the
threshold, and clusters them by connected components. This module computes the same pairs
and clusters from a Dask DataFrame, with the same functions on the workers:

1. **sign** (per partition): :func:`lshdb.text.dedup.shingle_texts`, :func:`~lshdb.text.dedup.sign_texts`
   and :func:`lshdb.hashing.minhash.band_keys`. Each document is named by its partition and row,
   ``p << 32 | row``, which sorts in input order without counting rows first.
2. **band rounds** (:mod:`lshdb.dask.buckets`): a few bands at a time, each partition
   splits its (band, key, document) records by key over ``M`` buckets; each bucket task
   sorts its records and sends the sorted members of every bucket of two or more documents
   to the partition of its smallest (a bucket spanning partitions also sends its tail to
   each other partition that starts pairs in it): g ids, not g(g-1)/2 pairs. A round waits
   for the previous one, so memory holds one round's records.
3. **candidates**: each partition lists, with :func:`lshdb.text.dedup.bucket_pairs`, every
   pair of those member lists that starts at one of its documents (all pairs, as the single
   process does: a pair whose documents are not both similar to the bucket's smallest would
   be lost by a star), and deduplicates them (a pair sharing several bands is verified once).
4. **verify**: each partition is read a second time (its task graph, run again inside a
   task after the candidates, so texts are never held across the rounds) and ships the shingle
   hashes (or signatures) of the documents that other partitions' candidates name; each
   partition then scores its candidates with :func:`lshdb.text.dedup.exact_similarity`.
5. **components**: union-find per partition, folded in a tree on the workers
   (:mod:`lshdb.dask.components`); clusters are gathered on the partition of their smallest
   document, numbered by it as the single process numbers them.

Thread safety: building the graph is pure; the graph's tasks share no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DuplicateKeyError, InputFormatError, InvalidParameterError, InvalidVectorError
from ..hashing.minhash import band_keys
from ..hashing.shingles import parse_shingle
from ..text.dedup import (
    check_options,
    choose_bands,
    exact_similarity,
    shingle_texts,
    sign_texts,
)
from . import components
from .buckets import bucket_members, candidates, part_of, split_records
from .client import require

__all__ = ["DedupFrames", "dedup", "match_index", "PAIRS_META", "CLUSTERS_META"]

_U64 = np.uint64
_ROW_BITS = _U64(32)
_ROW_MASK = _U64(0xFFFFFFFF)
_VERIFY_BLOCK = 1 << 20  # candidate pairs scored per block
PAIRS_META = {"a": object, "b": object, "jaccard": "float64"}
CLUSTERS_META = {"cluster": "int64", "size": "int64", "keys": object}


@dataclass(frozen=True)
class _Options:
    text: str
    key: str
    threshold: float
    kind: str
    n_gram: int
    num_perm: int
    verify: str
    mode: str
    seed: int
    b: int
    r: int


@dataclass
class DedupFrames:
    """What :func:`dedup` returns: lazy results that share one graph.

    Attributes
    ----------
    pairs : dask.dataframe.DataFrame
        ``a``, ``b`` (keys, ``a`` first in input order) and ``jaccard``, in the single
        process's order (by first, then second document).
    clusters : dask.dataframe.DataFrame
        ``cluster`` (numbered by first document), ``size`` and ``keys`` (in input order).
    stats : dask.delayed.Delayed
        A dict of counts (documents, empty documents, candidates, pairs, clusters, bands).
    roots : dask.delayed.Delayed
        The folded union-find: ``(documents, roots)`` of every document in a cluster, by
        ``p << 32 | row`` (used to pick the documents a deduplicated collection keeps).

    npartitions : int
    pair_parts, cluster_parts : list of dask.delayed.Delayed
        The pandas partitions of ``pairs`` and ``clusters`` (for writers that compute
        them with ``stats`` in one graph).

    Compute them together (``dask.compute(f.pairs, f.clusters, f.stats)``) so that the
    shared work is done once.
    """

    pairs: Any
    clusters: Any
    stats: Any
    roots: Any
    npartitions: int
    pair_parts: list[Any]
    cluster_parts: list[Any]


def _columns(part: Any, o: _Options, p: int) -> tuple[list[Any], list[Any]]:
    for name in (o.key, o.text):
        if name not in part.columns:
            raise InputFormatError(f"partition {p}: no {name!r} column (columns: "
                                   f"{', '.join(map(repr, list(part.columns)[:8]))})")
    keys, texts = part[o.key].tolist(), part[o.text].tolist()
    if len(texts) >= 1 << 32:
        raise InvalidParameterError(f"partition {p} holds {len(texts)} rows; repartition it "
                                    "below 2**32 rows")
    return keys, texts


def _shingle(texts: list[Any], o: _Options, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return shingle_texts(texts, o.kind, o.n_gram)
    except InvalidVectorError as exc:
        raise InvalidVectorError(f"partition {p}: {exc}") from None


def _sign(part: Any, p: int, o: _Options, m: int) -> dict[str, Any]:
    """Band keys of partition ``p``'s documents, and its keys routed for the uniqueness check."""
    keys, texts = _columns(part, o, p)
    live, offsets, hashes = _shingle(texts, o, p)
    sig = sign_texts(texts, live, offsets, hashes, o.kind, o.n_gram, o.num_perm, o.mode, o.seed)
    bkeys = band_keys(sig, o.b, o.r, o.seed) if len(live) else np.zeros((0, o.b), _U64)
    dest = (_key_hash(keys) % _U64(m)).astype(np.int64)
    order = np.argsort(dest, kind="stable")
    bounds = np.cumsum(np.bincount(dest, minlength=m))[:-1]
    key_parts = [(p, rows, [keys[i] for i in rows.tolist()])
                 for rows in np.split(order, bounds)]
    ids = (_U64(p) << _ROW_BITS) | live.astype(_U64)
    return {"docs": len(texts), "live": len(live), "ids": ids, "bkeys": bkeys,
            "key_parts": key_parts}


def _key_hash(keys: list[Any]) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_pandas_object(pd.Series(keys, dtype=object), index=False).to_numpy()


def _check_keys(*parts: tuple[int, np.ndarray, list[Any]]) -> int:
    """Raise on a key that two documents share (the single process's rule)."""
    import pandas as pd

    keys = [k for part in parts for k in part[2]]
    for k in keys:
        if type(k) not in (str, int):  # bool is an int, and not a key
            p, i = _where(parts, keys.index(k))
            raise InputFormatError(f"partition {p} row {i}: a key must be a string or an "
                                   f"integer; found {type(k).__name__}")
    dup = np.flatnonzero(pd.Series(keys, dtype=object).duplicated(keep=False).to_numpy())
    if len(dup):
        first = int(dup[0])
        second = next(int(d) for d in dup[1:] if keys[d] == keys[first])
        (p0, i0), (p1, i1) = _where(parts, first), _where(parts, second)
        raise DuplicateKeyError(f"key {keys[first]!r} appears more than once (partition "
                                f"{p0} row {i0} and partition {p1} row {i1}); keys must be "
                                "unique")
    return len(keys)


def _where(parts: tuple[tuple[int, np.ndarray, list[Any]], ...], at: int) -> tuple[int, int]:
    for p, rows, keys in parts:
        if at < len(keys):
            return p, int(rows[at])
        at -= len(keys)
    raise IndexError(at)


def _features(texts: list[Any], o: _Options, p: int, rows: np.ndarray) -> Any:
    """The payload of the given rows of a partition (all with shingles): their CSR hashes,
    or their signatures. Only these texts are shingled: each text's values depend on it
    alone."""
    subset = [texts[i] for i in rows.tolist()]
    live, offsets, hashes = _shingle(subset, o, p)
    if o.verify == "estimate":
        return sign_texts(subset, live, offsets, hashes, o.kind, o.n_gram, o.num_perm, o.mode,
                          o.seed)
    return offsets, hashes


class _Reread:
    """A partition's own task graph, carried as data: running it inside a later task reads
    the partition again instead of holding it in memory from the first read."""

    def __init__(self, part: Any) -> None:
        self.graph = dict(part.__dask_graph__())
        self.key = part.key

    def load(self) -> Any:
        from dask.local import get_sync

        return get_sync(self.graph, self.key)


def _ship(part: _Reread, q: int, o: _Options, *cands: np.ndarray) -> list[Any]:
    """For each partition p: the ids, keys and features of partition q's documents that p's
    candidates name (as second documents; as first documents too when p == q)."""
    keys, texts = _columns(part.load(), o, q)
    wanted = []
    for p, c in enumerate(cands):
        b = c[1][part_of(c[1]) == q]
        if p == q:
            b = np.concatenate((c[0], b))
        wanted.append(np.unique(b & _ROW_MASK).astype(np.int64))
    rows = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
    payload = _features(texts, o, q, rows)
    out = []
    for w in wanted:
        pos = np.searchsorted(rows, w)
        out.append(((_U64(q) << _ROW_BITS) | w.astype(_U64), [keys[i] for i in w.tolist()],
                    _take(payload, pos)))
    return out


def _take(payload: Any, pos: np.ndarray) -> Any:
    if isinstance(payload, np.ndarray):
        return payload[pos]
    offsets, hashes = payload
    cnt = offsets[pos + 1] - offsets[pos]
    idx = np.arange(int(cnt.sum())) + np.repeat(offsets[pos] - (np.cumsum(cnt) - cnt), cnt)
    return np.concatenate(([0], np.cumsum(cnt))), hashes[idx]


def _verify(cand: np.ndarray, threshold: float, *shipped: Any) -> dict[str, Any]:
    """Score partition p's candidates against the features shipped to it; keep the pairs."""
    ids = np.concatenate([s[0] for s in shipped]) if shipped else np.zeros(0, _U64)
    keys = [k for s in shipped for k in s[1]]
    ids, first = np.unique(ids, return_index=True)
    keys = [keys[i] for i in first.tolist()]
    payloads = [s[2] for s in shipped]
    if payloads and isinstance(payloads[0], np.ndarray):
        sig = np.concatenate(payloads)[first]
        def score(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return np.asarray((sig[x] == sig[y]).mean(axis=1))
    else:
        offsets, hashes = _concat_csr(payloads)
        offsets, hashes = _take((offsets, hashes), first)
        def score(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return exact_similarity(offsets, hashes, x, y)
    xa, xb = np.searchsorted(ids, cand[0]), np.searchsorted(ids, cand[1])
    keep_a, keep_b, keep_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for lo in range(0, len(xa), _VERIFY_BLOCK):
        x, y = xa[lo:lo + _VERIFY_BLOCK], xb[lo:lo + _VERIFY_BLOCK]
        sim = score(x, y)
        ok = sim >= threshold
        keep_a.append(x[ok])
        keep_b.append(y[ok])
        keep_j.append(sim[ok])
    xa, xb, sim = np.concatenate(keep_a), np.concatenate(keep_b), np.concatenate(keep_j)
    return {"a": ids[xa], "b": ids[xb], "jaccard": sim, "ids": ids, "keys": keys,
            "candidates": int(cand.shape[1])}


def _concat_csr(payloads: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not payloads:
        return np.zeros(1, np.int64), np.zeros(0, _U64)
    counts = np.concatenate([np.diff(o) for o, _ in payloads])
    return np.concatenate(([0], np.cumsum(counts))), np.concatenate([h for _, h in payloads])


def _pairs_frame(v: dict[str, Any]) -> Any:
    import pandas as pd

    ids, keys = v["ids"], v["keys"]
    ka = [keys[i] for i in np.searchsorted(ids, v["a"]).tolist()]
    kb = [keys[i] for i in np.searchsorted(ids, v["b"]).tolist()]
    return pd.DataFrame({"a": pd.Series(ka, dtype=object), "b": pd.Series(kb, dtype=object),
                         "jaccard": np.asarray(v["jaccard"], dtype=np.float64)})


def _counts(d: dict[str, Any], *names: str) -> tuple[int, ...]:
    return tuple(len(d[n]) if isinstance(d[n], np.ndarray) else int(d[n]) for n in names)


def _stats(o: _Options, signed: list[tuple[int, int]], verified: list[tuple[int, int]],
           roots: tuple[np.ndarray, np.ndarray], n_keys: list[int]) -> dict[str, Any]:
    docs = sum(s[0] for s in signed)
    in_clusters = len(roots[0])
    n_clusters = int(np.count_nonzero(roots[0] == roots[1]))
    return {"documents": docs, "threshold": o.threshold, "shingle": f"{o.kind}:{o.n_gram}",
            "num_perm": o.num_perm, "mode": o.mode, "verify": o.verify,
            "empty_documents": docs - sum(s[1] for s in signed), "bands": o.b, "rows": o.r,
            "candidate_pairs": sum(v[0] for v in verified),
            "similar_pairs": sum(v[1] for v in verified), "clusters": n_clusters,
            "documents_in_clusters": in_clusters, "duplicates": in_clusters - n_clusters,
            "partitions": len(signed)}


def _meta(columns: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def dedup(frame: Any, text: str = "text", key: str = "id", threshold: float = 0.8,
          shingle: str = "word:5", num_perm: int = 128, verify: str = "exact",
          mode: str = "oph", seed: int = 0, bands: tuple[int, int] | None = None,
          fp_weight: float = 0.1, fn_weight: float = 0.9, bands_per_round: int = 8,
          buckets: int | None = None, split_every: int = 8) -> DedupFrames:
    """Find the near-duplicate pairs and clusters of a Dask DataFrame of documents, lazily.

    Parameters
    ----------
    frame : dask.dataframe.DataFrame
        One document a row, with columns ``text`` (str) and ``key`` (unique str or int).
    threshold, shingle, num_perm, verify, mode, seed, bands, fp_weight, fn_weight
        As in :func:`lshdb.text.dedup.dedup`; the same values give the same pairs and clusters.
    bands_per_round : int
        Bands shuffled together (fewer: less memory per round, more rounds).
    buckets : int, optional
        Bucket tasks per round (default: the number of partitions, at most 8; each round
        has partitions x buckets transfers).
    split_every : int
        Fan-in of the union-find fold.

    Returns
    -------
    DedupFrames
        Lazy ``pairs``, ``clusters`` and ``stats``; nothing is computed yet.

    Raises
    ------
    InvalidParameterError
        A bad option (at once); a missing column or a repeated key raise
        ``InputFormatError`` or ``DuplicateKeyError`` when computed.
    MissingDependencyError
        Dask is not installed.
    """
    dask = require("dataframe")
    import dask.dataframe as dd

    check_options(threshold, num_perm, verify, mode, bands)
    kind, n_gram = parse_shingle(shingle)
    for name, v in (("bands_per_round", bands_per_round), ("split_every", split_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name[0] == "b" else 2):
            raise InvalidParameterError(f"{name} must be an int >= {1 if name[0] == 'b' else 2}"
                                        f"; found {v!r}")
    b, r = choose_bands(threshold, num_perm, fp_weight, fn_weight, bands)
    o = _Options(text, key, float(threshold), kind, n_gram, int(num_perm), verify, mode,
                 int(seed), int(b), int(r))
    parts = frame[[key, text]].to_delayed() if hasattr(frame, "to_delayed") else None
    if parts is None:
        raise InvalidParameterError("frame must be a dask.dataframe.DataFrame")
    n_parts = len(parts)
    m = int(buckets or min(n_parts, 8))
    if m < 1:
        raise InvalidParameterError(f"buckets must be >= 1; found {buckets!r}")
    delayed = dask.delayed

    signed = [delayed(_sign, pure=True)(part, p, o, m) for p, part in enumerate(parts)]
    checks = [delayed(_check_keys, pure=True)(*[s["key_parts"][j] for s in signed])
              for j in range(m)]
    routed: list[list[Any]] = [[] for _ in range(n_parts)]
    previous: list[Any] = []
    for j0 in range(0, b, bands_per_round):
        j1 = min(b, j0 + bands_per_round)
        splits = [delayed(split_records, pure=True)(s, j0, j1, m, *previous) for s in signed]
        joined = [delayed(bucket_members, pure=True)(n_parts, *[sp[i] for sp in splits])
                  for i in range(m)]
        for jn in joined:
            for p in range(n_parts):
                routed[p].append(jn[p])
        previous = joined
    cands = [delayed(candidates, pure=True)(p, *routed[p], *checks) for p in range(n_parts)]
    # the texts are read again after the rounds rather than held in memory through them
    ships = [delayed(_ship, pure=True)(_Reread(parts[q]), q, o, *cands) for q in range(n_parts)]
    verified = [delayed(_verify, pure=True)(cands[p], o.threshold, *[s[p] for s in ships])
                for p in range(n_parts)]
    leaves = [delayed(components.forest, pure=True)(v["a"], v["b"]) for v in verified]
    roots = components.fold(leaves, split_every)
    members = [delayed(components.members_by_root, pure=True)(v["ids"], v["keys"], roots,
                                                              n_parts) for v in verified]
    cluster_parts = [delayed(components.clusters_frame, pure=True)(
        roots, *[mb[c] for mb in members]) for c in range(n_parts)]
    stats = delayed(_stats, pure=True)(
        o, [delayed(_counts, pure=True)(s, "docs", "live") for s in signed],
        [delayed(_counts, pure=True)(v, "candidates", "a") for v in verified], roots, checks)
    pair_parts = [delayed(_pairs_frame, pure=True)(v) for v in verified]
    with dask.config.set({"dataframe.convert-string": False}):  # keys stay str or int
        pairs = dd.from_delayed(pair_parts, meta=_meta(PAIRS_META), verify_meta=False)
        clusters = dd.from_delayed(cluster_parts, meta=_meta(CLUSTERS_META), verify_meta=False)
    return DedupFrames(pairs=pairs, clusters=clusters, stats=stats, roots=roots,
                       npartitions=n_parts, pair_parts=pair_parts, cluster_parts=cluster_parts)


def _match_part(part: Any, index: str, o: _Options, exact: bool | None) -> Any:
    import pandas as pd

    from ..index.index import open as open_index

    keys, texts = _columns(part, o, -1)
    a, b, j = [], [], []
    with open_index(index, readonly=True) as ix, ix.reader() as r:
        for key, text in zip(keys, texts):
            if not isinstance(text, str) or not text.split():
                continue
            for other, score in r.query(text, k=None, threshold=o.threshold, exact=exact):
                a.append(key)
                b.append(other)
                j.append(score)
    return pd.DataFrame({"a": pd.Series(a, dtype=object), "b": pd.Series(b, dtype=object),
                         "jaccard": np.asarray(j, dtype=np.float64)})


def match_index(frame: Any, index: str, text: str = "text", key: str = "id",
                threshold: float = 0.8, verify: str = "exact") -> Any:
    """Each document's near-duplicates among a persistent jaccard index's items, lazily.

    Every worker opens the index read-only (it must be on a disk the workers share, never
    a network file system) and queries its partitions. Returns a Dask DataFrame of
    ``a`` (document key), ``b`` (index key) and ``jaccard``.
    """
    dask = require("dataframe")

    from ..index.index import open as open_index

    check_options(threshold, 128, verify, "oph", None)
    with open_index(index, readonly=True) as ix:
        if not ix.metric.is_set:
            raise InputFormatError(f"{index} is a {ix.metric.name} index, not jaccard")
    o = _Options(text, key, float(threshold), "word", 5, 128, verify, "oph", 0, 1, 1)
    with dask.config.set({"dataframe.convert-string": False}):
        return frame[[key, text]].map_partitions(_match_part, index, o,
                                                 None if verify == "exact" else False,
                                                 meta=_meta(PAIRS_META))
