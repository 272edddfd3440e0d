"""Choosing a dense index's query path: buckets, hash codes or an exact scan.

The calibration (:mod:`lshdb.tuning`) predicts what the buckets cost to reach the target
recall. This module puts the other paths beside them, on equal terms:

* the exact scan: one product over every row, recall 1;
* a scan of B-bit SimHash codes (:mod:`lshdb.hashing.codes`) followed by an exact re-rank of the R
  nearest codes, for B in :data:`CODE_BITS`: the recall at each R is predicted from the
  Hamming ranks of the true neighbours among a sample of the rows.

Costs are measured on the machine that calibrates (once per process and row shape): what a
row of product, a code of Hamming scan and selection, a candidate of exact re-rank and the
query's own code take here. The cheapest path predicted to reach the target (plus the
calibration's margin) wins; :func:`choose` returns it with every path's prediction, which
``stats()["calibration"]["paths"]`` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from ..hashing.codes import SimHashCoder, hamming_words, nearest
from ..metrics.dense import Metric

__all__ = ["CODE_BITS", "RERANKS", "costs", "choose"]

CODE_BITS = (128, 256, 512)
RERANKS = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000)
# The recall of codes is predicted for the calibration's sample queries, which are stored
# rows; queries from outside sit farther from their neighbours, and codes lose more there
# than buckets do (docs/performance.md): codes must clear the target by this much more.
CODE_MARGIN = 0.02
_SAMPLE = 8_000  # rows whose codes stand for the index when ranking the neighbours
_TIMING_ROWS = 20_000
_costs: dict[tuple[int, int, int], dict[str, Any]] = {}


def _best_of(f: Any, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def costs(dim: int, itemsize: int = 4, n: int = _TIMING_ROWS,
          timing: Callable[[], AbstractContextManager[Any]] | None = None) -> dict[str, Any]:
    """Microseconds per row, code and candidate of each path on this machine, for an index
    of about ``n`` rows (measured once per process, row shape and power of two of ``n``
    up to :data:`_TIMING_ROWS`, on rows laid out as in a row file: small indexes stay in
    the caches, and their rows cost less). ``timing`` is entered while timing: the index
    passes what keeps BLAS on one thread, as its queries run."""
    m = min(_TIMING_ROWS, 1 << max(int(n) - 1, 1).bit_length())
    key = (dim, itemsize, m)
    if key in _costs:
        return _costs[key]
    with timing() if timing is not None else nullcontext():
        out = _measure(dim, itemsize, m)
    _costs[key] = out
    return out


def _measure(dim: int, itemsize: int, m: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dtype = np.float32 if itemsize == 4 else np.float16
    padded = (dim * itemsize + 7) // 8 * 8 + 8  # payload, padding and checksum
    buf = np.zeros((m, padded), dtype=np.uint8)
    M: np.ndarray = buf[:, : dim * itemsize].view(dtype)
    block = rng.random((min(m, 1024), dim), dtype=np.float32) - np.float32(0.5)
    M[:] = np.resize(block, (m, dim))  # the values only fill the rows: a block, repeated
    q = rng.standard_normal(dim).astype(np.float32)
    if itemsize == 4:
        scan = _best_of(lambda: np.argpartition(M @ q, 9)[:10]) / m
    else:
        scan = _best_of(lambda: np.argpartition(M.astype(np.float32) @ q, 9)) / m
    r = min(m, 200)
    ids = np.sort(rng.choice(m, r, replace=False))
    rerank = _best_of(lambda: np.argpartition(M[ids].astype(np.float32) @ q, 9)) / r
    out: dict[str, Any] = {"scan_row_us": scan * 1e6, "rerank_us": rerank * 1e6, "codes": {}}
    for bits in CODE_BITS:
        words = bits // 64
        cols = rng.integers(0, 2**63, (words, m), dtype=np.uint64)
        ham = _best_of(lambda c=cols: nearest(hamming_words(c, c[:, 0].copy()), 100)) / m
        P = rng.standard_normal((dim, bits)).astype(np.float32)
        enc = _best_of(lambda P=P: np.packbits(q @ P > 0))
        out["codes"][bits] = {"row_us": ham * 1e6, "query_us": enc * 1e6}
    return out


def _code_ranks(metric: Metric, X: np.ndarray, qidx: np.ndarray, nn: np.ndarray,
                n: int, seed: int) -> dict[int, np.ndarray]:
    """Each true neighbour's estimated rank by Hamming distance among ``n`` rows, from a
    sample of ``X`` (the queries themselves left out), for each size of :data:`CODE_BITS`:
    ``{bits: (len(qidx), k_nn)}``. One set of the largest codes serves every size (the
    first ``bits`` of a code are a code of that size), computed without the exactness
    screen of stored codes: ranks only need their statistics."""
    rng = np.random.default_rng(seed + 0x5A)
    pool = np.setdiff1d(np.arange(len(X)), qidx)
    S = pool if len(pool) <= _SAMPLE else rng.choice(pool, _SAMPLE, replace=False)
    centre = metric.code_centre(X)
    if centre is None:
        centre = np.zeros(X.shape[1], np.float32)
    P = SimHashCoder(X.shape[1], max(CODE_BITS), seed).P

    def words(A: np.ndarray) -> np.ndarray:
        return np.packbits((np.asarray(A, np.float32) - centre) @ P > 0, axis=1).view("<u8")

    cs, cq = words(X[S]).T.copy(), words(X[qidx])  # word-major sample, as scans see them
    cn = words(X[nn.ravel()]).reshape(len(qidx), nn.shape[1], -1)
    scale = (n - 1) / len(S)
    out = {}
    for bits in CODE_BITS:
        w = bits // 64
        ranks = np.empty(nn.shape)
        for i in range(len(qidx)):
            hs = np.sort(hamming_words(cs[:w], cq[i, :w]))
            hn = np.bitwise_count(cn[i, :, :w] ^ cq[i, :w]).sum(axis=1)
            below = np.searchsorted(hs, hn, "left")
            ties = np.searchsorted(hs, hn, "right") - below
            ranks[i] = (below + ties / 2) * scale
        out[bits] = ranks
    return out


def choose(metric: Metric, X: np.ndarray, qidx: np.ndarray, nn: np.ndarray, n: int,
           buckets: dict[str, Any], target: float, margin: float, k: int = 10,
           allow_codes: bool = True, seed: int = 0) -> dict[str, Any]:
    """The cheapest path predicted to reach ``target + margin`` recall@``k``.

    ``buckets`` is the calibrated bucket plan's prediction (``recall``, ``us``). Returns
    ``{"path": "buckets" | "scan" | "codes", "codes": bits or 0, "rerank": R or None,
    "paths": {name: {"recall", "us", ...}}}`` where ``us`` are predicted microseconds of
    a query's path (what is common to every path, the query's preparation and its keys,
    left out).
    """
    c = costs(metric.row_dim(), metric.row_dtype.itemsize, n)
    paths: dict[str, dict[str, Any]] = {
        "buckets": {"recall": round(float(buckets["recall"]), 4),
                    "us": round(float(buckets["us"]), 1)},
        "scan": {"recall": 1.0, "us": round(n * c["scan_row_us"] + k * c["rerank_us"], 1)},
    }
    if allow_codes and metric.simhash_codes:
        all_ranks = _code_ranks(metric, X, qidx, nn, n, seed)
        for bits in CODE_BITS:
            ranks = all_ranks[bits]
            cb = c["codes"][bits]
            for R in RERANKS:
                if R < k:
                    continue
                r = float(np.mean(ranks < R))
                us = cb["query_us"] + n * cb["row_us"] + min(R, n) * c["rerank_us"]
                if r >= target + margin + CODE_MARGIN or R == RERANKS[-1] or R >= n:
                    paths[f"codes{bits}"] = {"recall": round(r, 4), "us": round(us, 1),
                                             "rerank": R}
                    break
    ok = {name: p for name, p in paths.items()
          if p["recall"] >= target + margin + (CODE_MARGIN if name.startswith("codes") else 0)}
    pool = ok or {"scan": paths["scan"]}
    name = min(pool, key=lambda p: pool[p]["us"])
    out: dict[str, Any] = {"path": name, "codes": 0, "rerank": None, "paths": paths,
                           "costs_us": {"scan_row": round(c["scan_row_us"], 4),
                                        "rerank": round(c["rerank_us"], 4),
                                        **{f"codes{b}_row": round(v["row_us"], 5)
                                           for b, v in c["codes"].items()}}}
    if name.startswith("codes"):
        out.update(path="codes", codes=int(name[5:]), rerank=paths[name]["rerank"])
    return out
