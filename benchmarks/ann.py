"""Nearest-neighbour benchmark: lshdb with default parameters against numpy brute force.

For each data set: recall@10, one-query-at-a-time latency and batched queries/s of lshdb and
of exact numpy search measured in the same run, build rate, bytes on disk by part, and the
time to open the index in a fresh process and answer a first query. Then the cost of 1,000
inserts into a bucket that already holds 1,000,000 ids against the same inserts into an
empty index.

usage: python benchmarks/ann.py [--sets clustered-100k,clustered-1m,minilm]
                                [--metrics cosine,l2] [--queries 1000] [--seed 0]
Writes benchmarks/results/ann.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import (  # noqa: E402
    dense_set,
    in_subprocess,
    median,
    percentiles,
    table,
    timed,
    write_result,
)
from lshdb.io.datasets import exact_knn  # noqa: E402


def recall_at_10(results: list[list[tuple[object, float]]], truth: np.ndarray) -> float:
    return float(np.mean([len({k for k, _ in r} & set(truth[i, :10].tolist())) / 10
                          for i, r in enumerate(results)]))


def brute_one(X: np.ndarray, Q: np.ndarray, metric: str, m: int = 50) -> float:
    """Median seconds of one exact query (matrix-vector product + argpartition)."""
    B = X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X
    sq = (B * B).sum(1)
    times = []
    for q in Q[:m]:
        t0 = time.perf_counter()
        d = -(B @ q) if metric == "cosine" else sq - 2.0 * (B @ q)
        part = np.argpartition(d, 9)[:10]
        part[np.argsort(d[part])]
        times.append(time.perf_counter() - t0)
    return median(times)


def run_set(name: str, X: np.ndarray, Q: np.ndarray, metric: str, truth: np.ndarray | None,
            workdir: str) -> dict[str, object]:
    print(f"[{name} {metric}] {len(X):,} x {X.shape[1]}, {len(Q)} queries", flush=True)
    brute_batch_s, gt = timed(lambda: exact_knn(X, Q, 10, metric))
    if truth is None:
        truth = gt
    b_one = brute_one(X, Q, metric)
    path = os.path.join(workdir, f"{name}-{metric}.lshdb")
    shutil.rmtree(path, ignore_errors=True)

    def build() -> None:
        with lshdb.create(path, metric=metric, dim=X.shape[1]) as index:
            with index.writer() as w:
                w.add(range(len(X)), X)

    build_s, _ = timed(build)
    with lshdb.open(path, readonly=True) as index:
        fam = index.family.describe() if index.family else {}
        st = index.stats(buckets=False)
        index.query(Q[0], k=10)  # warm the page cache like a server would be
        lat = []
        single = []
        for q in Q:
            t0 = time.perf_counter()
            single.append(index.query(q, k=10))
            lat.append(time.perf_counter() - t0)
        batch_s, batch = timed(lambda: index.query_batch(Q, k=10))
        cands = [index.candidates(q)[1]["candidates"] for q in Q[:200]]
    rec = recall_at_10(single, truth)
    rec_b = recall_at_10(batch, truth)
    code = ("import time, numpy as np, lshdb\n"
            f"q = np.load({os.path.join(workdir, 'q0.npy')!r})\n"
            "t0 = time.perf_counter()\n"
            f"ix = lshdb.open({path!r}, readonly=True)\n"
            "ix.query(q, k=10)\n"
            "print(time.perf_counter() - t0)\n")
    np.save(os.path.join(workdir, "q0.npy"), Q[1])
    opens = [float(in_subprocess(code)) for _ in range(5)]
    p = percentiles(lat)
    n_tables = fam.get("L", 1)
    return {
        "set": name, "metric": metric, "n": len(X), "dim": X.shape[1],
        "params": f"k={fam.get('k')} L={n_tables}" + (f" w={fam['w']:.3g}" if "w" in fam else "")
                  + f" probes={st['settings'].get('probes')}"
                  + (" scan (exact)" if st["settings"].get("scan") else ""),
        "recall@10": rec, "recall@10 batch": rec_b,
        "candidates (median)": float(np.median(cands)),
        "query p50 ms": p["p50"] * 1e3, "query p99 ms": p["p99"] * 1e3,
        "queries/s (one)": 1.0 / p["mean"],
        "brute one ms": b_one * 1e3, "speed-up (one)": b_one / p["p50"],
        "queries/s (batch)": len(Q) / batch_s, "brute queries/s (batch)": len(Q) / brute_batch_s,
        "batch ratio": brute_batch_s / batch_s,
        "build s": build_s, "build vectors/s": len(X) / build_s,
        "open+first query ms": median(opens) * 1e3,
        "rows MB": st["bytes"]["rows"] / 2**20,
        "postings MB": st["bytes"]["postings"] / 2**20,
        "key maps MB": st["bytes"]["key_maps"] / 2**20,
        "postings+keys B/vector/table": (st["bytes"]["postings"] + st["bytes"]["key_maps"])
                                        / len(X) / n_tables,
    }


def big_bucket(workdir: str, n_big: int = 1_000_000, n_new: int = 1000) -> list[dict[str, object]]:
    """1,000 inserts into a bucket of 1,000,000 ids versus into an empty index."""
    rng = np.random.default_rng(1)
    dim = 16
    direction = np.ones(dim, dtype=np.float32)
    # one hyperplane table of 1 function: every vector on the same side shares one bucket
    def fresh(name: str) -> lshdb.Index:
        p = os.path.join(workdir, name)
        shutil.rmtree(p, ignore_errors=True)
        return lshdb.create(p, metric="cosine", dim=dim, k=1, L=1, seed=3)

    def same_side(n: int, index: lshdb.Index) -> np.ndarray:
        a = index.family.A[:, 0]
        V = direction + 0.01 * rng.standard_normal((n, dim)).astype(np.float32)
        V *= np.sign(V @ a)[:, None]  # all on the positive side of the one hyperplane
        return V

    rows = []
    big = fresh("big.lshdb")
    with big.writer() as w:
        w.add(range(n_big), same_side(n_big, big))
    empty = fresh("empty.lshdb")
    for label, index in (("bucket of 1,000,000", big), ("empty index", empty)):
        new = same_side(n_new, index)
        t0 = time.perf_counter()
        for i in range(n_new):
            index.add([f"n{i}"], new[i : i + 1])
        t_one = time.perf_counter() - t0
        new = same_side(n_new, index)
        t0 = time.perf_counter()
        index.add([f"b{i}" for i in range(n_new)], new)
        t_batch = time.perf_counter() - t0
        rows.append({"target": label, "1,000 single-vector commits s": t_one,
                     "one 1,000-vector commit ms": t_batch * 1e3})
        index.close()
    rows.append({"target": "ratio (bucket / empty)",
                 "1,000 single-vector commits s": rows[0]["1,000 single-vector commits s"]
                 / rows[1]["1,000 single-vector commits s"],
                 "one 1,000-vector commit ms": rows[0]["one 1,000-vector commit ms"]
                 / rows[1]["one 1,000-vector commit ms"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="clustered-100k,clustered-1m,minilm")
    ap.add_argument("--metrics", default="cosine,l2")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bucket", action="store_true", help="skip the big-bucket insert test")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="lshdb-bench-")
    rows = []
    try:
        for name in args.sets.split(","):
            data = dense_set(name, args.queries, args.seed)
            if data is None:
                continue
            X, Q, _ = data  # run_set finds each metric's exact neighbours itself
            for metric in ["cosine"] if name == "minilm" else args.metrics.split(","):
                rows.append(run_set(name, X, Q, metric, None, workdir))
            print(json.dumps(rows[-1], default=str), flush=True)
        bucket = [] if args.no_bucket else big_bucket(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    quality = ["set", "metric", "n", "dim", "params", "recall@10", "recall@10 batch",
               "candidates (median)"]
    speed = ["set", "metric", "query p50 ms", "query p99 ms", "queries/s (one)",
             "brute one ms", "speed-up (one)", "queries/s (batch)",
             "brute queries/s (batch)", "batch ratio"]
    build = ["set", "metric", "build s", "build vectors/s", "open+first query ms", "rows MB",
             "postings MB", "key maps MB", "postings+keys B/vector/table"]
    body = ("### Recall with default parameters (only metric and dim given)\n\n"
            + table(rows, quality) + "\n\n### Speed against numpy brute force, same run\n\n"
            + table(rows, speed) + "\n\n### Build, open and size on disk\n\n"
            + table(rows, build))
    if bucket:
        body += ("\n\n### Inserting into a bucket that holds 1,000,000 ids (full durability)\n\n"
                 + table(bucket))
    write_result("ann", "Nearest neighbours: lshdb defaults vs numpy brute force", body,
                 "python benchmarks/ann.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
