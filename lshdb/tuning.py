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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .families import BitSample, Family, Hyperplane, PStable, Unary
from .metrics import Metric

__all__ = ["Plan", "calibrate", "exact_neighbours", "PROBE_US", "candidate_us"]

PROBE_US = 5.0  # one probe: perturbation + LMDB range read + decode (measured, 2 cores)
MIN_BUCKET = 24  # mean ids per bucket: LMDB spends ~24 bytes per entry, so this keeps
#                  postings near 5 bytes per id and bulk builds fast


def candidate_us(row_bytes: int) -> float:
    """Cost of one candidate: union, row gather, checksum and exact distance."""
    return 0.25 + row_bytes / 1000.0


@dataclass
class Plan:
    """A calibrated configuration and what the simulation predicts for it."""

    family: Family
    probes: int
    recall: float
    candidates: float
    micros: float
    explored: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"probes": self.probes, "predicted_recall": round(self.recall, 4),
                "predicted_candidates": round(self.candidates, 1),
                "predicted_query_us": round(self.micros, 1)}


def exact_neighbours(metric: Metric, X: np.ndarray, qidx: np.ndarray, k: int,
                     base_idx: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the exact ``k`` nearest rows of ``X[qidx]`` (self excluded)."""
    B = X if base_idx is None else X[base_idx]
    ids = np.arange(len(X)) if base_idx is None else base_idx
    out = np.empty((len(qidx), k), dtype=np.int64)
    sq = (B * B).sum(1) if metric.name == "l2" else None
    for s in range(0, len(qidx), 32):
        qi = qidx[s : s + 32]
        Q = X[qi]
        if metric.name == "cosine":
            d = -(Q @ B.T)
        elif metric.name == "l2":
            d = sq[None, :] - 2.0 * (Q @ B.T)  # type: ignore[index]
        elif metric.name == "hamming":
            d = np.stack([np.bitwise_count(B ^ q).sum(1, dtype=np.int64) for q in Q]).astype(np.float64)
        else:
            d = np.stack([np.abs(B - q).sum(1) for q in Q])
        d = d.astype(np.float64)
        d[ids[None, :] == qi[:, None]] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable")
        out[s : s + 32] = ids[np.take_along_axis(part, order, 1)]
    return out


def _distances(metric: Metric, X: np.ndarray, qidx: np.ndarray, nn: np.ndarray) -> np.ndarray:
    Q = X[qidx][:, None, :]
    N = X[nn]
    if metric.name == "cosine":
        return 1.0 - (Q * N).sum(-1)
    if metric.name == "l2":
        return np.sqrt(((Q - N) ** 2).sum(-1))
    return np.abs(Q.astype(np.float64) - N).sum(-1)


def _grid(metric: Metric, family: str, options: dict[str, Any], n: int,
          nn_dist: float, X: np.ndarray) -> list[dict[str, Any]]:
    log_n = math.log2(max(n, 2))
    if "k" in options:
        ks = [options["k"]]
    elif family == "pstable":
        ks = [2, 4, 6, 8, 12, 16, 20, 24]
    else:
        top = int(min(40, max(6, round(log_n) + 2)))
        ks = list(range(2, top + 1, 2))
    if family != "pstable":
        return [{"k": k} for k in ks]
    if "w" in options:
        ws = [options["w"]]
    else:
        ws = [nn_dist * f for f in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)]
    return [{"k": k, "w": w} for w in ws for k in ks]


def _make(metric: Metric, family: str, cfg: dict[str, Any], L: int, seed: int,
          options: dict[str, Any], X: np.ndarray) -> Family:
    k = cfg["k"]
    if family == "hyperplane":
        return Hyperplane(metric.dim, k, L, seed)
    if family == "bitsample":
        return BitSample(metric.dim, k, L, seed)
    if family == "unary":
        mv = options.get("max_value") or max(1, int(np.ceil(X.max())))
        return Unary(metric.dim, k, L, mv, seed)
    dist = "gaussian" if metric.name == "l2" else "cauchy"
    return PStable(metric.dim, k, L, float(cfg["w"]), seed, dist)


def _simulate(fam: Family, X: np.ndarray, qidx: np.ndarray, nn: np.ndarray,
              S: np.ndarray, scale: float, checkpoints: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted recall and candidates at each number of probes in ``checkpoints``."""
    L = fam.L
    HS = fam.hash(S)
    order = np.argsort(HS, axis=0, kind="stable")
    sorted_keys = np.take_along_axis(HS, order, 0)
    m = len(S)
    nq, knn = nn.shape
    Hnn = fam.hash(X[nn.ravel()]).reshape(nq, knn, L)
    pmax = checkpoints[-1]
    cps = np.asarray(checkpoints)
    found = np.zeros(len(cps))
    cands = np.zeros(len(cps))
    for qi in range(nq):
        tables, keys = fam.probe(X[qidx[qi]], pmax)
        P = len(keys)
        # recall: the first probe that lands in each neighbour's bucket
        hit = Hnn[qi][:, tables] == keys[None, :]
        first = np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)
        found += (first[None, :] < cps[:, None]).sum(1)
        # candidates: subsample points met by the first p probes
        lo = np.empty(P, dtype=np.int64)
        hi = np.empty(P, dtype=np.int64)
        for t in np.unique(tables):
            sel = tables == t
            lo[sel] = np.searchsorted(sorted_keys[:, t], keys[sel], "left")
            hi[sel] = np.searchsorted(sorted_keys[:, t], keys[sel], "right")
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            continue
        if total > 8 * m:  # a coarse configuration: bound candidates by the postings read
            cands += np.minimum(np.cumsum(lengths)[np.minimum(cps, P) - 1], m)
            continue
        pos = np.repeat(np.arange(P), lengths)
        offs = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = order[np.repeat(lo, lengths) + offs, np.repeat(tables, lengths)]
        srt = np.argsort(rows, kind="stable")
        r_sorted = rows[srt]
        firsts = np.concatenate(([True], r_sorted[1:] != r_sorted[:-1]))
        first_pos = np.sort(pos[srt][firsts])
        cands += np.searchsorted(first_pos, cps, "left")
    return found / (nq * knn), cands / nq * scale


def mean_bucket(fam: Family, S: np.ndarray, n: int) -> float:
    """Mean ids per non-empty bucket at size ``n``, estimated from the sample ``S``.

    Exact when ``S`` is the whole data; otherwise the number of buckets is scaled
    linearly with ``n / len(S)``, which over-counts them, so the estimate errs small.
    """
    H = fam.hash(S)
    distinct = np.mean([len(np.unique(H[:, t])) for t in range(fam.L)])
    return float(n / (distinct * n / len(S)))


def calibrate(metric: Metric, family: str, options: dict[str, Any], X: np.ndarray,
              target: float = 0.9, k_nn: int = 10, n_queries: int = 50,
              margin: float = 0.03, seed: int = 0, sample: int = 20000) -> Plan:
    """Choose k (and w) and the number of probes for ``X``; see the module docstring."""
    n = len(X)
    rng = np.random.default_rng(seed)
    L = options.get("L", 16)
    fseed = options.get("seed", 0)
    qidx = np.sort(rng.choice(n, min(n_queries, n - 1), replace=False))
    k_nn = min(k_nn, n - 1)
    limit = 2_000_000 if metric.name in ("cosine", "l2") else 200_000
    base_idx = None if n <= limit else np.sort(rng.choice(n, limit, replace=False))
    nn = exact_neighbours(metric, X, qidx, k_nn, base_idx)
    nn_dist = float(np.median(_distances(metric, X, qidx, nn))) if metric.name != "hamming" else 1.0
    nn_dist = max(nn_dist, 1e-9)
    S = X[np.sort(rng.choice(n, min(sample, n), replace=False))]
    scale = n / len(S)
    S_big = X if n <= 100_000 else X[np.sort(rng.choice(n, 100_000, replace=False))]
    if "probes" in options:
        checkpoints = [max(options["probes"], 1)]
    else:
        checkpoints = [L * m for m in (1, 2, 4, 8, 16)]
    row_cost = candidate_us(metric.row_dim() * metric.row_dtype.itemsize)
    explored: list[dict[str, Any]] = []
    best: tuple[float, Family, int, float, float] | None = None
    fallback: tuple[float, Family, int, float, float] | None = None
    # k ascends within each w: recall only falls and cost is U-shaped, so stop a w's run
    # once recall drops below target or cost has risen twice in a row
    state: dict[float, tuple[bool, float, int]] = {}
    for cfg in _grid(metric, family, options, n, nn_dist, X):
        w = cfg.get("w", 0.0)
        stopped, last_cost, rises = state.get(w, (False, math.inf, 0))
        if stopped:
            continue
        fam = _make(metric, family, cfg, L, fseed, options, X)
        occupancy = mean_bucket(fam, S_big, n)
        if occupancy < min(MIN_BUCKET, n / 64) and "k" not in options:
            state[w] = (True, last_cost, rises)  # larger k only shrinks buckets further
            continue
        rec, cand = _simulate(fam, X, qidx, nn, S, scale, checkpoints)
        cfg_best = math.inf
        for p, r, c in zip(checkpoints, rec, cand):
            us = p * PROBE_US + c * row_cost
            explored.append({**cfg, "probes": p, "recall": round(float(r), 4),
                             "candidates": round(float(c), 1), "us": round(us, 1),
                             "bucket": round(occupancy, 1)})
            if r >= target + margin:
                cfg_best = min(cfg_best, us)
                if best is None or us < best[0]:
                    best = (us, fam, p, float(r), float(c))
            if fallback is None or (r, -us) > (fallback[3], -fallback[0]):
                fallback = (us, fam, p, float(r), float(c))
        rises = rises + 1 if cfg_best > last_cost else 0
        state[w] = (rec[-1] < target + margin or rises >= 2, min(cfg_best, last_cost), rises)
    chosen = best or fallback
    if chosen is None:
        raise RuntimeError("calibration explored no configuration")
    us, fam, p, r, c = chosen
    return Plan(fam, p, r, c, us, explored)
