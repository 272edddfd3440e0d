"""An index grown from empty in batches against the same rows built at once, no user action.

For each set, in one process: lshdb's default cosine index (only metric and dim given)
built from all rows in one ``add``, and another grown from empty in batches (the writer
revisits its calibration at every 4x growth of the live rows, as it does for any user).
Both answer the same queries one at a time through a ``Reader``, in turn, round after
round; the table reports recall@10 against brute force, median latency, the grown index's
latency over the built one's (the median of each round's ratio), and what each chose.

Sets: ``clustered-1m`` (1,000,000 x 128 seeded clustered vectors, batches of 10,000) and
``minilm`` (../shared/data/debian_minilm_dev.npz, 20,000 x 384, batches of 1,000).

usage: python benchmarks/growth.py [--sets clustered-1m,minilm] [--queries 300] [--rounds 3]
Writes benchmarks/results/growth.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import dense_set, median, table, write_result  # noqa: E402
from benchmarks.embeddings import exact, recall  # noqa: E402

BATCH = {"clustered-1m": 10_000, "minilm": 1_000}


def build(path: str, X: np.ndarray, batch: int | None) -> tuple[float, Any, int]:
    """Seconds to build, the index, and how many commits it took."""
    t0 = time.perf_counter()
    index = lshdb.create(path, metric="cosine", dim=X.shape[1])
    step = batch or len(X)
    commits = 0
    for s in range(0, len(X), step):
        index.add(range(s, min(len(X), s + step)), X[s : s + step])
        commits += 1
    return time.perf_counter() - t0, index, commits


def chose(index: Any) -> str:
    cal = index.stats(buckets=False)["calibration"]
    fam = index.family.describe() if index.family else {}
    path = f"codes {cal['codes']}" if cal.get("path") == "codes" else cal.get("path")
    return (f"path {path}, k={fam.get('k')}, L={fam.get('L')}, probes {cal.get('probes')}, "
            f"min_hits {cal.get('min_hits')}, calibrated for {cal.get('live_rows', 0):,} rows "
            f"({index.generation})")


def run_set(name: str, n_queries: int, rounds: int, work: str) -> str:
    data = dense_set(name, n_queries, seed=0)
    if data is None:
        return ""
    X, Q, _ = data
    Q = Q[:n_queries]
    print(f"[{name}] {len(X):,} x {X.shape[1]}, {len(Q)} queries", flush=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    truth = exact(Xn, Q / np.linalg.norm(Q, axis=1, keepdims=True))
    batch = BATCH[name]
    built_s, built, _ = build(os.path.join(work, "built"), X, None)
    print(f"  built at once in {built_s:.1f} s", flush=True)
    grown_s, grown, commits = build(os.path.join(work, "grown"), X, batch)
    print(f"  grown in {commits} batches in {grown_s:.1f} s", flush=True)
    labels = {"built at once": built, f"grown ({batch:,}/batch)": grown}
    cms = {s: ix.reader() for s, ix in labels.items()}
    readers = {s: cm.__enter__() for s, cm in cms.items()}
    try:
        answers = {s: [[k for k, _ in r.query(q, 10)] for q in Q] for s, r in readers.items()}
        lat: dict[str, list[float]] = {s: [] for s in readers}
        for rnd in range(rounds):
            for s, r in readers.items():
                ts = []
                for q in Q:
                    t0 = time.perf_counter()
                    r.query(q, 10)
                    ts.append(time.perf_counter() - t0)
                lat[s].append(median(ts))
            print(f"  round {rnd + 1}: " + ", ".join(f"{s} {v[-1] * 1e6:.0f} us"
                                                     for s, v in lat.items()), flush=True)
    finally:
        for cm in cms.values():
            cm.__exit__(None, None, None)
    built_key = "built at once"
    rows = []
    for s, ix in labels.items():
        rows.append({"index": s, "recall@10": recall(answers[s], truth),
                     "p50 us": median(lat[s]) * 1e6,
                     "x built latency": median([a / b for a, b in
                                                  zip(lat[s], lat[built_key])]),
                     "build s": built_s if s == built_key else grown_s, "chose": chose(ix)})
        ix.close()
    diff = rows[1]["recall@10"] - rows[0]["recall@10"]
    slower = rows[1]["x built latency"]
    return (f"### {name}: {len(X):,} x {X.shape[1]}, {len(Q)} queries, {rounds} rounds\n\n"
            f"{table(rows)}\n\nGrown against built: latency {slower:.2f}x, "
            f"recall {diff:+.3f}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="clustered-1m,minilm")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="growth", help="results/NAME.md to write")
    args = ap.parse_args()
    body = []
    for name in args.sets.split(","):
        work = tempfile.mkdtemp(prefix=f"lshdb-growth-{name}-")
        try:
            part = run_set(name, args.queries, args.rounds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if part:
            body.append(part)
    cmd = "python benchmarks/growth.py " + " ".join(sys.argv[1:])
    write_result(args.out, "An index grown in batches against one built at once",
                 "\n\n".join(body), cmd.strip())


if __name__ == "__main__":
    main()
