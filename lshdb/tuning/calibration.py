"""Choosing parameters from the data: simulate LSH on a sample, predict recall and cost.

``calibrate`` is how an index picks the build-time parameters the caller left out (k, and
w for p-stable families) and the default number of probes, from the first batch added:

1. sample ``n_queries`` items of the batch as queries and find their exact ``k_nn`` nearest
   neighbours in the batch (brute force, self excluded);
2. for each candidate family (a grid over k, and over w as multiples of the median
   neighbour distance), hash the neighbours and a subsample of the batch in memory, and
   follow each query's multi-probe sequence: the probe at which each true neighbour is
   first found gives the predicted recall at every number of probes, and the subsample
   points met on the way, scaled to the batch size, give the predicted candidates;
3. keep the configuration whose predicted cost (probes x probe cost + candidates x
   re-rank cost) is lowest among those predicted to reach ``target`` recall plus a margin.

Recall predicted this way does not depend on the index size once the neighbours are known,
and it only improves as the index grows (neighbours get closer); the cost grows with size,
which ``lshdb tune`` measures on the real index.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bits import mix64
from ..hashing.families import BitSample, Family, Hyperplane, PStable, Unary
from ..metrics.dense import Metric
from ..storage.postings import stable_bucket_order

__all__ = ["Plan", "calibrate", "exact_neighbours", "PROBE_US", "candidate_us"]

# costs of the model, in us (docs/performance.md#tuning has how they were measured)
PROBE_US = 4.0  # one probe: perturbation + LMDB range read
POSTING_US = 0.025  # one id read from a posting list: decode, sort, count
# floor on the predicted mean ids per bucket: a bucket's fixed bytes must stay small
# beside its ids, and the prediction from a small sample runs low
MIN_BUCKET = 8
HITS = (1, 2, 3)  # min_hits values the calibration considers


def candidate_us(row_bytes: int) -> float:
    """Cost of one candidate: union, row gather, checksum and exact distance.

    A fit to whole queries rather than the isolated re-rank, which chose slower settings
    (docs/performance.md#tuning)."""
    return 0.25 + row_bytes / 1000.0


@dataclass
class Plan:
    """A calibrated configuration and what the simulation predicts for it."""

    family: Family
    probes: int
    min_hits: int
    recall: float
    candidates: float
    micros: float
    explored: list[dict[str, Any]] = field(default_factory=list)
    queries: np.ndarray | None = None  # the sample queries' rows of X, and their
    neighbours: np.ndarray | None = None  # exact neighbours (for lshdb.paths)

    def summary(self) -> dict[str, Any]:
        return {"probes": self.probes, "min_hits": self.min_hits,
                "predicted_recall": round(self.recall, 4),
                "predicted_candidates": round(self.candidates, 1),
                "predicted_query_us": round(self.micros, 1)}


def exact_neighbours(metric: Metric, X: np.ndarray, qidx: np.ndarray, k: int,
                     base_idx: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the exact ``k`` nearest rows of ``X[qidx]`` (self excluded)."""
    B = X if base_idx is None else X[base_idx]
    ids = np.arange(len(X)) if base_idx is None else base_idx
    out = np.empty((len(qidx), k), dtype=np.int64)
    sq = np.einsum("ij,ij->i", B, B) if metric.needs_norms else None
    for s in range(0, len(qidx), 32):
        qi = qidx[s : s + 32]
        Q = X[qi]
        d = metric.ranking_distances(B, Q, sq)
        if base_idx is None:
            d[np.arange(len(qi)), qi] = np.inf
        else:
            pos = np.minimum(np.searchsorted(base_idx, qi), len(base_idx) - 1)
            mine = base_idx[pos] == qi
            d[np.flatnonzero(mine), pos[mine]] = np.inf
        # the k-th smallest distance of each row (a value partition is ~3x cheaper than an
        # argpartition), then the rows at or below it; with ties at that distance (integer
        # distances), an argpartition of the row picks which
        kth = np.partition(d, k - 1, axis=1)[:, k - 1]
        for j in range(len(qi)):
            near = np.flatnonzero(d[j] <= kth[j])
            if len(near) > k:
                near = np.argpartition(d[j], k - 1)[:k]
            out[s + j] = ids[near[np.argsort(d[j][near], kind="stable")]]
    return out


def _grid(family: str, options: dict[str, Any], n: int, nn_dist: float) -> list[dict[str, Any]]:
    """Configurations to try, most promising first (k descending within each w)."""
    log_n = math.log2(max(n, 2))
    if "k" in options:
        ks = [options["k"]]
    elif family == "crosspolytope":
        ks = [6, 5, 4, 3, 2, 1]  # each function is log2(2d') bits
    elif family == "pstable":
        ks = [24, 20, 16, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2]
    else:
        top = int(min(40, max(6, round(log_n) + 2)))
        ks = list(range(top, 1, -2))
    if family != "pstable":
        return [{"k": k} for k in ks]
    ws = [options["w"]] if "w" in options else [nn_dist * f for f in (3.0, 2.0, 4.0, 1.5, 6.0)]
    return [{"k": k, "w": w} for w in ws for k in ks]


def _base(metric: Metric, family: str, k_max: int, L: int, seed: int,
          options: dict[str, Any], X: np.ndarray) -> Family:
    """The family with the most functions; smaller k take its first functions per table."""
    if family == "hyperplane":
        return Hyperplane(metric.hash_dim(), k_max, L, seed)
    if family == "crosspolytope":
        from ..hashing.crosspolytope import CrossPolytope

        return CrossPolytope(metric.hash_dim(), k_max, L, seed)
    if family == "bitsample":
        return BitSample(metric.hash_dim(), k_max, L, seed)
    if family == "unary":
        mv = options.get("max_value") or max(1, int(np.ceil(X.max())))
        return Unary(metric.hash_dim(), k_max, L, mv, seed)
    return PStable(metric.hash_dim(), k_max, L, 1.0, seed, metric.pstable_distribution)


def _first_k(a: np.ndarray, L: int, K: int, k: int) -> np.ndarray:
    """Columns of ``a`` (last axis ``L * K``, table-major) of each table's first ``k``."""
    return a.reshape(*a.shape[:-1], L, K)[..., :k].reshape(*a.shape[:-1], L * k)


def _sub(base: Family, k: int, w: float | None) -> Family:
    """``base`` restricted to its first ``k`` functions per table (and width ``w``)."""
    L, K = base.L, base.k

    def cols(a: np.ndarray) -> np.ndarray:
        return _first_k(a, L, K, k)

    if isinstance(base, Hyperplane):
        return Hyperplane(base.dim, k, L, base.seed, A=cols(base.A))
    if base.name == "crosspolytope":
        signs = base.signs  # type: ignore[attr-defined]
        sub_signs = signs.reshape(L, K, *signs.shape[1:])[:, :k].reshape(L * k, *signs.shape[1:])
        return type(base)(base.dim, k, L, base.seed, signs=sub_signs)  # type: ignore[call-arg]
    if isinstance(base, BitSample):
        return BitSample(base.dim, k, L, base.seed, positions=cols(base.positions))
    if isinstance(base, Unary):
        return Unary(base.dim, k, L, base.max_value, base.seed, coords=cols(base.coords),
                     thresholds=cols(base.thresholds))
    if isinstance(base, PStable):
        return _pstable_sub(base, k, w)
    raise TypeError(f"cannot restrict {type(base).__name__}")


def _pstable_sub(base: PStable, k: int, w: float | None) -> PStable:
    """:func:`_sub` of a p-stable family."""
    L, K = base.L, base.k
    return PStable(base.dim, k, L, float(w or base.w), base.seed, base.distribution,
                   A=_first_k(base.A, L, K, k), b=_first_k(base.b, L, K, k),
                   R=base.R[:k].copy())


def column_order(HS: np.ndarray) -> np.ndarray:
    """``argsort(HS, axis=0, kind="stable")``, column by column."""
    order = np.empty(HS.shape, dtype=np.intp)
    for t in range(HS.shape[1]):
        order[:, t] = stable_bucket_order(HS[:, t])
    return order


def _distinct(sorted_column: np.ndarray) -> int:
    return int(np.count_nonzero(sorted_column[1:] != sorted_column[:-1])) + 1


def _sample_keys(base: Family, fam: Family, S: np.ndarray, cache: dict[Any, np.ndarray]
                 ) -> np.ndarray:
    """``fam.hash(S)`` for ``fam = _sub(base, k, w)``, from work shared across the grid.

    The keys of a k-bit family are bit fields: a smaller k is the low k bits of the base
    family's key. A p-stable family's slots at width w are the base's first k slots per
    table at that width: the sample is projected once per w, and the combinations of its
    first k slots for every k are prefix sums. Both are exact: the projection decides each
    value on its own (see ``Projection``). ``cache`` keeps the base keys, or the latest
    width's prefix sums.
    """
    if isinstance(base, (Hyperplane, BitSample, Unary)):
        if "bits" not in cache:
            cache["bits"] = base.hash(S)
        return cache["bits"] & np.uint64((1 << fam.k) - 1)
    if isinstance(base, PStable) and isinstance(fam, PStable):
        if fam.w not in cache:
            cache.clear()  # the grid visits one width at a time
            slots = _pstable_sub(base, base.k, fam.w).slots(S)
            # every k's combination at once: prefix sums of slot_j * R_j over j (int64
            # arithmetic wraps as the family's own does)
            terms = slots.reshape(len(S), base.L, base.k).astype(np.int64)
            terms *= base.R.view(np.int64)
            cache[fam.w] = np.cumsum(terms, axis=2, out=terms)
        return mix64(cache[fam.w][:, :, fam.k - 1].view(np.uint64))
    return fam.hash(S)


def mean_bucket(HS: np.ndarray, sorted_keys: np.ndarray, n: int, k: int,
                bit_family: bool) -> float:
    """Mean ids per non-empty bucket at size ``n``, from the keys ``HS`` of a sample
    (``sorted_keys``: each column of ``HS`` sorted).

    The number of distinct buckets is measured on the sample and on its first quarter and
    extrapolated to ``n`` along the power law through the two (capped at 2**k buckets for
    families whose keys are k bits).
    """
    m = len(HS)
    if m >= n:
        distinct = np.mean([_distinct(sorted_keys[:, t]) for t in range(HS.shape[1])])
        return float(n / distinct)
    q = max(m // 4, 1)
    est = []
    for t in range(min(HS.shape[1], 8)):
        d_all = _distinct(sorted_keys[:, t])
        d_q = len(np.unique(HS[:q, t]))
        beta = min(max(math.log(d_all / d_q) / math.log(m / q), 0.0), 1.0)
        d_n = d_all * (n / m) ** beta
        if bit_family:
            d_n = min(d_n, 2.0**k)
        est.append(d_n)
    return float(n / np.mean(est))


def _simulate(fam: Family, X: np.ndarray, qidx: np.ndarray, nn: np.ndarray,
              HS: np.ndarray, order: np.ndarray, sorted_keys: np.ndarray, scale: float,
              checkpoints: list[int]) -> dict[str, np.ndarray]:
    """Predicted recall, candidates and postings read at each number of probes.

    ``recall1``/``cands1`` count every item met; ``recall{h}``/``cands{h}`` only items met
    in at least ``h`` probed buckets (the ``min_hits=h`` filter, for each h of ``HITS``);
    ``postings`` is the number of ids read from posting lists. All are scaled to the full
    data from the sample keys ``HS`` (``order``: their :func:`column_order`, and
    ``sorted_keys`` each column sorted).
    """
    m = len(HS)
    nq, knn = nn.shape
    Hnn = fam.hash(X[nn.ravel()]).reshape(nq, knn, fam.L)
    pmax = checkpoints[-1]
    cps = np.asarray(checkpoints)
    out = {name: np.zeros(len(cps))
           for name in [*(f"recall{h}" for h in HITS), *(f"cands{h}" for h in HITS), "postings"]}
    big = np.iinfo(np.int64).max
    probes = [fam.probe(X[qidx[qi]], pmax) for qi in range(nq)]
    # each probe's range of the sorted sample keys: one pair of searches per table
    all_t = np.concatenate([t for t, _ in probes])
    all_k = np.concatenate([k for _, k in probes])
    lo_all = np.empty(len(all_t), dtype=np.int64)
    hi_all = np.empty(len(all_t), dtype=np.int64)
    by_table = np.argsort(all_t, kind="stable")
    edges = np.searchsorted(all_t[by_table], np.arange(fam.L + 1))
    for t in range(fam.L):
        sel = by_table[edges[t] : edges[t + 1]]
        lo_all[sel] = np.searchsorted(sorted_keys[:, t], all_k[sel], "left")
        hi_all[sel] = np.searchsorted(sorted_keys[:, t], all_k[sel], "right")
    flat_order = np.ascontiguousarray(order.T).ravel()  # table t's order at t * m
    n_hits = len(HITS)
    start = 0
    for qi, (tables, keys) in enumerate(probes):
        P = len(keys)
        lo, hi = lo_all[start : start + P], hi_all[start : start + P]
        start += P
        # recall: the probes that land in each neighbour's bucket
        hit = Hnn[qi][:, tables] == keys[None, :]
        seen = np.cumsum(hit, axis=1)
        for h in HITS:  # the probe at which each neighbour is met for the h-th time
            at = np.where(seen[:, -1] >= h, (seen >= h).argmax(1), big)
            out[f"recall{h}"] += (at[None, :] < cps[:, None]).sum(1)
        # candidates: sample points met by the first p probes
        lengths = hi - lo
        read = np.cumsum(lengths)[np.minimum(cps, P) - 1]
        out["postings"] += read
        total = int(lengths.sum())
        if total == 0:
            continue
        if total > 8 * m:  # a coarse configuration: bound candidates by the postings read
            for h in HITS:
                out[f"cands{h}"] += np.minimum(read, m)
            continue
        pos = np.repeat(np.arange(P), lengths)
        offs = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = flat_order[np.repeat(lo + tables * m, lengths) + offs]
        # probe order kept within a row (radix sort when row numbers fit 16 bits)
        srt = np.argsort(rows.astype(np.uint16) if m <= 65536 else rows, kind="stable")
        r_sorted, p_sorted = rows[srt], pos[srt]
        new = np.concatenate(([True], r_sorted[1:] != r_sorted[:-1]))
        run_start = np.flatnonzero(new)
        rank = np.arange(total) - run_start[np.cumsum(new) - 1]  # 0 for a row's 1st meeting
        # candidates under min_hits=h: rows met for the h-th time before each checkpoint
        first = rank < n_hits
        met = np.bincount(rank[first] * P + p_sorted[first], minlength=n_hits * P)
        met = met.reshape(n_hits, P).cumsum(axis=1)[:, np.minimum(cps, P) - 1]
        for j, h in enumerate(HITS):
            out[f"cands{h}"] += met[j]
    for h in HITS:
        out[f"recall{h}"] /= nq * knn
        out[f"cands{h}"] *= scale / nq
    out["postings"] *= scale / nq
    return out


def calibrate(metric: Metric, family: str, options: dict[str, Any], X: np.ndarray,
              target: float = 0.9, k_nn: int = 10, n_queries: int = 50,
              margin: float = 0.03, seed: int = 0, sample: int = 20000,
              budget_s: float = 1.5, rows: int | None = None) -> Plan:
    """Choose k (and w) and the number of probes for ``X``; see the module docstring.

    ``rows``: the index size to plan for, when ``X`` is a sample of a larger index (the
    shards of a sharded build share one plan for the whole); default ``len(X)``."""
    m = len(X)
    n = max(rows or m, m)
    rng = np.random.default_rng(seed)
    L = options.get("L", 16)
    fseed = options.get("seed", 0)
    qidx = np.sort(rng.choice(m, min(n_queries, m - 1), replace=False))
    k_nn = min(k_nn, m - 1)
    limit = 2_000_000 if metric.product_form else 200_000  # a product is cheap per row
    base_idx = None if m <= limit else np.sort(rng.choice(m, limit, replace=False))
    nn = exact_neighbours(metric, X, qidx, k_nn, base_idx)
    nn_dist = metric.neighbour_scale(X[qidx][:, None, :], X[nn])
    nn_dist = max(nn_dist, 1e-9)
    S = X[rng.permutation(m)[: min(sample, m)]]
    scale = n / len(S)
    grid = _grid(family, options, n, nn_dist)
    base = _base(metric, family, max(c["k"] for c in grid), L, fseed, options, X)
    shared: dict[Any, np.ndarray] = {}
    deadline = time.monotonic() + budget_s
    if "probes" in options:
        checkpoints = [max(options["probes"], 1)]
    else:
        checkpoints = [L * f for f in (1, 2, 4, 8, 16, 32)]
    row_cost = candidate_us(metric.row_dim() * metric.row_dtype.itemsize)
    explored: list[dict[str, Any]] = []
    best: tuple[float, Family, int, int, float, float] | None = None
    fallback: tuple[float, Family, int, int, float, float] | None = None
    state: dict[float, tuple[bool, float, int]] = {}
    smallest_k = min(c["k"] for c in grid)
    for cfg in grid:
        w = cfg.get("w", 0.0)
        stopped, last_cost, rises = state.get(w, (False, math.inf, 0))
        if stopped or (best is not None and time.monotonic() > deadline):
            continue
        fam = _sub(base, cfg["k"], cfg.get("w"))
        HS = _sample_keys(base, fam, S, shared)
        sorted_keys = np.sort(HS, axis=0)
        occupancy = mean_bucket(HS, sorted_keys, n, cfg["k"],
                                family not in ("pstable", "crosspolytope"))
        small = occupancy < min(MIN_BUCKET, n / 64) and "k" not in options
        if small and not (fallback is None and cfg["k"] == smallest_k):
            continue  # buckets too small: a smaller k comes next (the coarsest is kept)
        sim = _simulate(fam, X, qidx, nn, HS, column_order(HS), sorted_keys, scale,
                        checkpoints)
        cfg_best = math.inf
        for hits in HITS:
            for j, p in enumerate(checkpoints):
                r = float(sim[f"recall{hits}"][j])
                c = float(sim[f"cands{hits}"][j])
                us = p * PROBE_US + c * row_cost + float(sim["postings"][j]) * POSTING_US
                explored.append({**cfg, "probes": p, "min_hits": hits, "recall": round(r, 4),
                                 "candidates": round(c, 1), "us": round(us, 1),
                                 "bucket": round(occupancy, 1)})
                option = (us, fam, p, hits, r, c)
                if r >= target + margin:
                    cfg_best = min(cfg_best, us)
                    if best is None or us < best[0]:
                        best = option
                if fallback is None or (r, -us) > (fallback[4], -fallback[0]):
                    fallback = option
        # k descends: recall rises and cost is U-shaped; stop a w once cost rose twice
        rises = rises + 1 if cfg_best > last_cost else 0
        state[w] = (rises >= 2, min(cfg_best, last_cost), rises)
    chosen = best or fallback
    if chosen is None:
        raise RuntimeError("calibration explored no configuration")
    us, fam, p, hits, r, c = chosen
    return Plan(fam, p, hits, r, c, us, explored, qidx, nn)
