"""``lshdb demo``: build an index from generated clustered vectors, query it, compare it
with exact numpy search, and report recall@10 and timings. Needs no download."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InvalidParameterError
from .index.index import create
from .index.index import open as open_index
from .io.datasets import clustered, exact_knn
from .metrics.registry import metric_class

__all__ = ["run_demo", "DEMO_MIN_ROWS"]

DEMO_MIN_ROWS = 1000  # fewer than this measures nothing worth showing


def run_demo(n: int, dim: int, metric: str, n_queries: int, seed: int,
             keep: str | None, progress: Callable[[int, str], Any]) -> dict[str, Any]:
    if n < DEMO_MIN_ROWS or n_queries < 1:
        raise InvalidParameterError(f"the demo needs at least {DEMO_MIN_ROWS:,} vectors and 1 "
                                    f"query; found {n} and {n_queries}")
    X, Q = clustered(n, dim, seed=seed, n_queries=n_queries)
    tmp = None
    if keep:
        path = keep
    else:
        tmp = tempfile.mkdtemp(prefix="lshdb-demo-")
        path = os.path.join(tmp, "demo.lshdb")
    try:
        t0 = time.perf_counter()
        with create(path, metric=metric, dim=dim) as index:
            step = 50_000
            with progress(n, "building") as bar, index.writer() as w:
                for s in range(0, n, step):
                    w.add(range(s, min(n, s + step)), X[s : s + step])
                    bar.update(min(step, n - s))
        build_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        index = open_index(path, readonly=True)
        first = index.query(Q[0], k=10)
        open_first_ms = (time.perf_counter() - t0) * 1e3
        with index:
            truth = exact_knn(X, Q, 10, metric)
            t0 = time.perf_counter()
            with progress(len(Q), "querying") as bar:
                single = []
                for q in Q:
                    single.append(index.query(q, k=10))
                    bar.update(1)
            single_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            index.query_batch(Q, k=10)
            batch_s = time.perf_counter() - t0
            stats = index.stats(buckets=False)
        recall = float(np.mean([len({key for key, _ in hits} & set(truth[i].tolist())) / 10
                                for i, hits in enumerate(single)]))
        brute_single, brute_batch = _brute_times(X, Q, metric)
        return {
            "vectors": n, "dim": dim, "metric": metric, "queries": len(Q),
            "family": stats["family"],
            "recall_at_10": round(recall, 4),
            "build_s": round(build_s, 2),
            "build_vectors_per_s": round(n / build_s),
            "open_and_first_query_ms": round(open_first_ms, 2),
            "query_ms": round(single_s / len(Q) * 1e3, 3),
            "brute_force_query_ms": round(brute_single * 1e3, 3),
            "speedup_one_query": round(brute_single / (single_s / len(Q)), 1),
            "batch_queries_per_s": round(len(Q) / batch_s),
            "brute_force_batch_queries_per_s": round(1 / brute_batch),
            "bytes_on_disk": stats["bytes"],
            "first_result": first[:3],
            "index": path if keep else "(temporary, removed)",
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _brute_times(X: np.ndarray, Q: np.ndarray, metric: str) -> tuple[float, float]:
    """Seconds per query of exact numpy search: one query at a time, and batched."""
    measure = metric_class(metric)(X.shape[1])
    B = X / np.linalg.norm(X, axis=1, keepdims=True) if measure.normalised else X
    sq = (B * B).sum(1) if measure.needs_norms else None
    m = min(len(Q), 50)
    t0 = time.perf_counter()
    for q in Q[:m]:
        d = measure.ranking_distances(B, q[None], sq)[0]
        np.argpartition(d, 9)[:10]
    single = (time.perf_counter() - t0) / m
    t0 = time.perf_counter()
    exact_knn(X, Q, 10, metric)
    batch = (time.perf_counter() - t0) / len(Q)
    return single, batch
