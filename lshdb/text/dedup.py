"""Near-duplicate detection: the similarity self-join of a text collection, in memory.

The workflow: :func:`lshdb.io.jsonl.read_jsonl_docs` reads ``{"id": ..., "text": ...}``
lines (any bad line is an error naming ``path:line``); :func:`dedup` shingles every text
(:mod:`lshdb.hashing.shingles`), signs it (:mod:`lshdb.hashing.minhash`), cuts the signatures into ``b`` bands of
``r`` rows, takes every pair of documents sharing a band bucket as a candidate, verifies
each candidate once (exact Jaccard over the shingle hash sets, or the signature estimate),
keeps the pairs at or above the threshold, and joins them into clusters with union-find.
:mod:`lshdb.text.files` writes the results as JSON lines (each file written to a temporary name, fsynced, then renamed into place).

Candidates
----------
For each band the documents are sorted by their band key; every run of equal keys (a
bucket) yields all its pairs ``(a, b)``, ``a < b`` by document number. A pair that also
shares a bucket in an earlier band is dropped there (its keys are compared directly), so
each candidate is verified exactly once without a global set of seen pairs. Pairs are
generated, filtered and verified in blocks of about a million, so a huge bucket costs time
in proportion to its pairs but only bounded memory; all pairs are still found (a bucket of
``g`` mutually similar documents *is* ``g (g - 1) / 2`` answers).

Documents without words have no shingles and no MinHash: they are never paired, are listed
in ``DedupResult.empty`` and in the statistics, and are kept by :func:`write_kept`.

Thread safety: functions share no state; a :class:`DedupResult` is read-only by convention.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DuplicateKeyError, InvalidParameterError
from ..hashing.jaccard import JaccardOracle
from ..hashing.minhash import MODES, band_keys, classic_signatures_csr, oph_signatures
from ..hashing.shingles import parse_shingle, shingle_hashes, shingle_token_hashes
from ..hashing.theory import optimal_bands
from ..io.jsonl import Key
from ..tuning.params import NUM_PERM_MAX, check_int

__all__ = [
    "DedupResult",
    "dedup",
    "connected_components",
    "check_options",
    "choose_bands",
    "shingle_texts", "sign_texts", "bucket_pairs", "exact_similarity",
]

Progress = Callable[[str, int, int], None]
_PAIR_BLOCK = 1 << 20  # candidate pairs generated and verified per block
KEEP = ("first", "longest")


# -- the self-join ---------------------------------------------------------------------


@dataclass
class DedupResult:
    """The outcome of :func:`dedup`.

    Attributes
    ----------
    keys : list
        The document keys, in input order.
    pair_a, pair_b : (p,) int64
        Document numbers of each similar pair, ``pair_a < pair_b``, sorted, each pair once.
    jaccard : (p,) float64
        Each pair's similarity (exact or estimated, as verified).
    labels : (n,) int64
        Each document's cluster number, or -1 for a document in no cluster.
    clusters : list of (m,) int64
        The clusters (connected components of two or more documents), each sorted, ordered
        by their first document; ``clusters[c]`` holds the documents labelled ``c``.
    empty : (e,) int64
        Documents without shingles (never paired).
    lengths : (n,) int64
        Length of each text in characters (for ``keep="longest"``).
    stats : dict
        Counts and seconds per phase.
    """

    keys: list[Key]
    pair_a: np.ndarray
    pair_b: np.ndarray
    jaccard: np.ndarray
    labels: np.ndarray
    clusters: list[np.ndarray]
    empty: np.ndarray
    lengths: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    def pairs(self) -> Iterator[tuple[Key, Key, float]]:
        """(key_a, key_b, jaccard) for every similar pair, in document order."""
        keys = self.keys
        for a, b, j in zip(self.pair_a.tolist(), self.pair_b.tolist(), self.jaccard.tolist()):
            yield keys[a], keys[b], j

    def kept(self, keep: str = "first") -> np.ndarray:
        """(n,) bool: the documents a deduplicated collection keeps.

        One document per cluster (the first, or the longest text with ties to the first)
        and every document in no cluster, empty documents included.
        """
        if keep not in KEEP:
            raise InvalidParameterError(f"keep must be 'first' or 'longest'; found {keep!r}")
        mask = self.labels < 0
        for members in self.clusters:
            pick = members[0] if keep == "first" else members[int(np.argmax(self.lengths[members]))]
            mask[pick] = True
        return mask


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over edges ``(a[t], b[t])`` of ``n`` nodes: each node's root.

    Vectorised hooking and path compression: every round hooks the larger of two
    differing roots under the smaller (``np.minimum.at``), then compresses paths by
    pointer jumping until every node points at its root. A root is the smallest node of
    its component.
    """
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        differ = np.flatnonzero(ra != rb)
        if len(differ) == 0:
            break
        lo = np.minimum(ra[differ], rb[differ])
        hi = np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        a, b = a[differ], b[differ]
    return parent


def _pair_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted band keys: the positions that start pairs (every member of a bucket of
    two or more but its last), and how many pairs each starts."""
    n = len(keys)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], change))
    sizes = np.diff(np.concatenate((starts, [n])))
    big = sizes >= 2
    starts, sizes = starts[big], sizes[big]
    group_end = np.repeat(starts + sizes, sizes)
    pos = np.repeat(starts, sizes) + (np.arange(int(sizes.sum())) -
                                      np.repeat(np.cumsum(sizes) - sizes, sizes))
    count = group_end - pos - 1
    keep = count > 0
    return pos[keep], count[keep]


def _band_candidates(order: np.ndarray, pos: np.ndarray, count: np.ndarray
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All pairs of one band's buckets, (a, b) with a < b, in blocks of about a million."""
    ends = np.cumsum(count)
    lo = 0
    while lo < len(pos):
        base = ends[lo - 1] if lo else 0
        hi = int(np.searchsorted(ends, base + _PAIR_BLOCK, side="right"))
        hi = min(max(hi, lo + 1), len(pos))
        cnt = count[lo:hi]
        left = np.repeat(pos[lo:hi], cnt)
        right = left + 1 + (np.arange(len(left)) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        yield order[left], order[right]
        lo = hi


def _join(bkeys: np.ndarray, verify: Callable[[np.ndarray, np.ndarray], np.ndarray],
          threshold: float, report: Progress
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """Candidates band by band, each verified once: (a, b, similarity) of the kept pairs
    sorted by (a, b), the number of candidates, and the seconds spent verifying."""
    b = bkeys.shape[1]
    found_a, found_b, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    n_candidates, t_verify = 0, 0.0
    for j in range(b):
        report("verify", j, b)
        col = bkeys[:, j]
        order = np.argsort(col, kind="stable")
        for x, y in bucket_pairs(order, col[order]):
            if j:  # a pair that shares a bucket in an earlier band was verified there
                fresh = ~(bkeys[x, :j] == bkeys[y, :j]).any(axis=1)
                x, y = x[fresh], y[fresh]
            if len(x) == 0:
                continue
            n_candidates += len(x)
            t0 = time.perf_counter()
            sim = verify(x, y)
            t_verify += time.perf_counter() - t0
            ok = sim >= threshold
            found_a.append(x[ok])
            found_b.append(y[ok])
            found_j.append(sim[ok])
    report("verify", b, b)
    pa, pb, pj = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_j)
    sort = np.lexsort((pb, pa))
    return pa[sort], pb[sort], pj[sort], n_candidates, t_verify


def _clusters(n: int, pa: np.ndarray, pb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cluster labels (-1: in no cluster) and the clusters, numbered by first document."""
    root = connected_components(n, pa, pb)
    size = np.bincount(root, minlength=n)
    in_cluster = size[root] >= 2
    roots = np.flatnonzero((size >= 2) & (root == np.arange(n)))
    labels = np.full(n, -1, dtype=np.int64)
    labels[in_cluster] = np.searchsorted(roots, root[in_cluster])
    members = np.flatnonzero(in_cluster)
    members = members[np.argsort(labels[members], kind="stable")]
    clusters = np.split(members, np.cumsum(size[roots])[:-1]) if len(roots) else []
    return labels, clusters


def exact_similarity(offsets: np.ndarray, hashes: np.ndarray, x: np.ndarray, y: np.ndarray
                     ) -> np.ndarray:
    """Exact Jaccard of pairs (x, y) of a CSR of hash sets, over only the sets they touch."""
    docs = np.unique(np.concatenate((x, y)))
    cnt = offsets[docs + 1] - offsets[docs]
    idx = np.arange(int(cnt.sum())) + np.repeat(offsets[docs] - (np.cumsum(cnt) - cnt), cnt)
    sub = np.concatenate(([0], np.cumsum(cnt)))
    oracle = JaccardOracle(sub, hashes[idx])
    return oracle(np.searchsorted(docs, x), np.searchsorted(docs, y))


@functools.lru_cache(maxsize=64)
def _bands(threshold: float, num_perm: int, fp_weight: float, fn_weight: float
           ) -> tuple[int, int]:
    return optimal_bands(threshold, num_perm, fp_weight, fn_weight)


def choose_bands(threshold: float, num_perm: int, fp_weight: float = 0.1,
                 fn_weight: float = 0.9, bands: tuple[int, int] | None = None
                 ) -> tuple[int, int]:
    """``bands`` if given, else :func:`lshdb.theory.optimal_bands` (as :func:`dedup` does)."""
    return bands if bands is not None else _bands(float(threshold), int(num_perm),
                                                  float(fp_weight), float(fn_weight))


def bucket_pairs(order: np.ndarray, sorted_keys: np.ndarray,
                 keep: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair sharing a key, in blocks of about a million: ``sorted_keys`` is one band's
    keys sorted (stably), ``order`` the documents in that order; yields ``(order[i],
    order[j])`` with ``i < j`` inside each run of equal keys. ``keep``, given the first
    documents, says which of them to list pairs for (the others' are never made)."""
    pos, count = _pair_rows(sorted_keys)
    if keep is not None and len(pos):
        mine = keep(order[pos])
        pos, count = pos[mine], count[mine]
    yield from _band_candidates(order, pos, count)


def shingle_texts(texts: Sequence[str], kind: str, n_gram: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(live, offsets, hashes)``: the texts with shingles, and their distinct shingle
    hashes, ``hashes[offsets[i]:offsets[i + 1]]`` for ``texts[live[i]]``. Each text's
    values depend on that text alone, so any split of a collection gives the same rows."""
    offsets, hashes = shingle_hashes(texts, kind, n_gram)
    live = np.flatnonzero(np.diff(offsets) > 0)
    return live, np.append(offsets[live], offsets[-1]), hashes


def sign_texts(texts: Sequence[str], live: np.ndarray, offsets: np.ndarray,
               hashes: np.ndarray, kind: str, n_gram: int, num_perm: int, mode: str,
               seed: int) -> np.ndarray:
    """The signatures of ``texts[live]`` (from :func:`shingle_texts`) as :func:`dedup`
    computes them."""
    if mode == "oph":
        return oph_signatures(offsets, hashes, num_perm, seed)
    tok_offsets, tokens = shingle_token_hashes([texts[i] for i in live], kind, n_gram)
    return classic_signatures_csr(tok_offsets, tokens, num_perm, seed)


def check_options(threshold: float, num_perm: int, verify: str, mode: str,
                   bands: tuple[int, int] | None) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not 0.0 < float(threshold) <= 1.0:
        raise InvalidParameterError(f"threshold must be in (0, 1]; found {threshold!r}")
    check_int("num_perm", num_perm, 2, NUM_PERM_MAX)  # the range an index accepts
    if verify not in ("exact", "estimate"):
        raise InvalidParameterError(f"verify must be 'exact' or 'estimate'; found {verify!r}")
    if mode not in MODES:
        raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}; found {mode!r}")
    if bands is not None:
        b, r = bands
        if not (isinstance(b, int) and isinstance(r, int) and b >= 1 and r >= 1
                and b * r <= num_perm):
            raise InvalidParameterError(
                f"bands must be (b, r) with b, r >= 1 and b * r <= num_perm; found {bands!r}")


def dedup(keys: Sequence[Key], texts: Sequence[str], threshold: float = 0.8,
          shingle: str = "word:5", num_perm: int = 128, verify: str = "exact",
          mode: str = "oph", seed: int = 0, progress: Progress | None = None,
          bands: tuple[int, int] | None = None, fp_weight: float = 0.1,
          fn_weight: float = 0.9) -> DedupResult:
    """Find every pair of documents whose shingle sets have Jaccard similarity >= threshold.

    Parameters
    ----------
    keys, texts
        The documents (keys unique).
    threshold : float in (0, 1]
        The similarity a pair must reach.
    shingle : str
        ``"word:N"`` or ``"char:N"`` (:func:`lshdb.hashing.shingles.parse_shingle`).
    num_perm : int
        Signature columns.
    verify : {"exact", "estimate"}
        Keep a candidate by its exact Jaccard similarity over the 64-bit shingle hash sets
        (precision 1.0 up to hash collisions) or by the signature estimate (faster, but
        both false pairs and misses near the threshold).
    mode : {"oph", "classic"}
        The signature (:mod:`lshdb.hashing.minhash`); ``classic`` is datasketch's scheme over SHA-1
        token hashes and much slower.
    seed : int
        Seeds the signatures and the band keys.
    progress : callable(phase, done, total), optional
        Called as each phase (``shingle``, ``sign``, ``band``, ``verify``, ``cluster``)
        starts and advances; ``verify`` advances once per band.
    bands : (b, r), optional
        Bands and rows; by default :func:`lshdb.theory.optimal_bands` with ``fp_weight``
        and ``fn_weight``, weighted towards recall because candidates are verified (a false
        candidate costs a little time, a miss is lost).

    Returns
    -------
    DedupResult

    Raises
    ------
    InvalidParameterError
        A threshold outside (0, 1], an unknown option, or bad bands.
    DuplicateKeyError
        A key that appears twice.
    InvalidVectorError
        A text that is not a str.
    """
    t_start = time.perf_counter()
    check_options(threshold, num_perm, verify, mode, bands)
    kind, n_gram = parse_shingle(shingle)
    keys, texts = list(keys), list(texts)
    if len(keys) != len(texts):
        raise InvalidParameterError(f"{len(keys)} keys but {len(texts)} texts")
    if len(set(keys)) != len(keys):
        seen: set[Key] = set()
        for k in keys:
            if k in seen:
                raise DuplicateKeyError(f"key {k!r} appears more than once; keys must be unique")
            seen.add(k)
    n = len(texts)
    report = progress or (lambda phase, done, total: None)
    stats: dict[str, Any] = {"documents": n, "threshold": float(threshold), "shingle": f"{kind}:{n_gram}",
                             "num_perm": int(num_perm), "mode": mode, "verify": verify}
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    report("shingle", 0, n)
    live, live_offsets, hashes = shingle_texts(texts, kind, n_gram)
    empty = np.setdiff1d(np.arange(n), live)
    report("shingle", n, n)
    seconds["shingle"] = time.perf_counter() - t0
    stats.update(empty_documents=len(empty), shingles=int(len(hashes)))

    t0 = time.perf_counter()
    report("sign", 0, len(live))
    sig = sign_texts(texts, live, live_offsets, hashes, kind, n_gram, num_perm, mode, seed)
    report("sign", len(live), len(live))
    seconds["sign"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    b, r = choose_bands(threshold, num_perm, fp_weight, fn_weight, bands)
    report("band", 0, b)
    bkeys = band_keys(sig, b, r, seed)
    report("band", b, b)
    seconds["band"] = time.perf_counter() - t0
    stats.update(bands=int(b), rows=int(r))

    t0 = time.perf_counter()
    verify_with = ((lambda x, y: exact_similarity(live_offsets, hashes, x, y)) if verify == "exact"
                   else (lambda x, y: (sig[x] == sig[y]).mean(axis=1)))
    xa, xb, pj, n_candidates, t_verify = _join(bkeys, verify_with, float(threshold), report)
    pa, pb = live[xa], live[xb]
    seconds["candidates"] = time.perf_counter() - t0 - t_verify
    seconds["verify"] = t_verify

    t0 = time.perf_counter()
    report("cluster", 0, len(pa))
    labels, clusters = _clusters(n, pa, pb)
    report("cluster", len(pa), len(pa))
    seconds["cluster"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    in_cluster = int(np.count_nonzero(labels >= 0))
    stats.update(candidate_pairs=n_candidates, similar_pairs=int(len(pa)),
                 clusters=len(clusters), documents_in_clusters=in_cluster,
                 duplicates=in_cluster - len(clusters),
                 seconds={k: round(v, 4) for k, v in seconds.items()})
    return DedupResult(keys=keys, pair_a=pa, pair_b=pb, jaccard=pj, labels=labels,
                       clusters=clusters, empty=empty,
                       lengths=np.fromiter(map(len, texts), dtype=np.int64, count=n),
                       stats=stats)
