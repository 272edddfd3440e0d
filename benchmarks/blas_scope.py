"""What it costs to set OpenBLAS to one thread per lshdb call instead of per reader block.

Queries one index (50,000 clustered 128-d vectors, cosine, built once into
~/.cache/lshdb-bench/) inside one reader block, in rounds that alternate two modes: "block"
holds a single-threaded section open for the whole round (as lshdb did before: one setting
per block), "call" leaves it to each query (as lshdb does now: two thread-count calls per
query). Prints the median latency of each round, the median of those per mode, their
ratio, and the cost of one enter and exit of lshdb.index.blas.single_threaded.

usage: flock /tmp/lshdb-bench.lock python benchmarks/blas_scope.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import lshdb
from lshdb.index import blas
from lshdb.io.datasets import clustered

CACHE = os.path.expanduser("~/.cache/lshdb-bench/blas-scope.lshdb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    if not os.path.exists(CACHE):
        X, _ = clustered(50_000, 128, seed=1, cluster_size=50, n_queries=10)
        with lshdb.create(CACHE, metric="cosine", dim=128) as index:
            index.add(range(len(X)), X)
    Q = np.random.default_rng(0).standard_normal((args.queries, 128)).astype(np.float32)
    rounds: dict[str, list[float]] = {"block": [], "call": []}
    with lshdb.open(CACHE, readonly=True) as index, index.reader() as r:
        for q in Q[:200]:  # warm-up
            r.query(q, k=10)
        for i in range(args.rounds):
            for mode in ("block", "call") if i % 2 == 0 else ("call", "block"):
                times = []
                with blas.single_threaded() if mode == "block" else _nothing():
                    for q in Q:
                        t0 = time.perf_counter()
                        r.query(q, k=10)
                        times.append(time.perf_counter() - t0)
                rounds[mode].append(statistics.median(times) * 1e6)
    for mode, values in rounds.items():
        print(f"{mode}: median {statistics.median(values):.1f} us per query; rounds "
              f"{[round(v, 1) for v in values]}")
    print(f"call / block: {statistics.median(rounds['call']) / statistics.median(rounds['block']):.3f}")
    t0 = time.perf_counter()
    for _ in range(100_000):
        with blas.single_threaded():
            pass
    print(f"one enter and exit: {(time.perf_counter() - t0) * 10:.2f} us "
          f"(OpenBLAS threads outside: {blas.threads()})")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
