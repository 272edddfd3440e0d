"""Guarantees benchmark: insert rates by batch size and durability, readers beside a writer,
compaction of a large index with deletions.

1. inserts/s into a 128-d index that already holds 100,000 rows, for batches of 1, 100 and
   10,000 vectors (one commit each), with durability "full" and "fast";
2. queries/s of 1, 2 and 4 reader processes, with no writer and while one writer process
   inserts batches of 1,000 continuously (full durability), the writer at normal priority
   and at nice 10 (a background loader, ``lshdb add --nice 10``); the index grows while
   the writer runs, so each writer's run is bracketed by reader-only runs and its ratio
   uses their mean;
3. compaction of an index of N rows (default 1,000,000) after deleting 30% of them: time,
   and bytes on disk before and after.

usage: python benchmarks/guarantees.py [--rows 1000000] [--seconds 8] [--seed 0]
Writes benchmarks/results/guarantees.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import median, table, write_result  # noqa: E402
from lshdb.datasets import clustered  # noqa: E402

DIM = 128
FIXED = {"k": 12, "L": 16}  # fixed parameters: the runs measure storage, not calibration


def insert_rates(workdir: str, seed: int) -> list[dict[str, Any]]:
    rows = []
    X, _ = clustered(100_000 + 30_000, DIM, seed=seed)
    for durability in ("full", "fast"):
        path = os.path.join(workdir, f"ins-{durability}.lshdb")
        shutil.rmtree(path, ignore_errors=True)
        with lshdb.create(path, metric="cosine", dim=DIM, durability=durability,
                          **FIXED) as index:
            index.add(range(100_000), X[:100_000])
        with lshdb.open(path, durability=durability) as index:
            nxt = 100_000
            for batch, commits in ((1, 300), (100, 60), (10_000, 2)):
                times = []
                for _ in range(commits):
                    keys = range(nxt, nxt + batch)
                    vecs = X[nxt : nxt + batch]  # new vectors (26,300 of the 30,000 spare)
                    t0 = time.perf_counter()
                    index.add(keys, vecs)
                    times.append(time.perf_counter() - t0)
                    nxt += batch
                t = median(times)
                rows.append({"durability": durability, "batch": batch, "commits": commits,
                             "median commit ms": t * 1e3, "vectors/s": batch / t})
    return rows


def _reader(path: str, seconds: float, seed: int, start: Any, out: Any) -> None:
    rng = np.random.default_rng(seed)
    Q, _ = clustered(2000, DIM, seed=1000 + seed)
    index = lshdb.open(path, readonly=True)
    index.query(Q[0])
    start.wait()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        index.query(Q[int(rng.integers(len(Q)))], k=10)
        n += 1
    out.put(n / (time.perf_counter() - t0))


def _writer(path: str, tag: str, nice: int, stop: Any, start: Any, out: Any) -> None:
    if nice:
        os.nice(nice)
    X, _ = clustered(200_000, DIM, seed=77)
    index = lshdb.open(path)
    start.wait()
    n = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        s = n % 190_000
        index.add([f"{tag}-{n + i}" for i in range(1000)], X[s : s + 1000])
        n += 1000
    out.put(n / (time.perf_counter() - t0))
    index.close()


def _serve(path: str, n_readers: int, seconds: float, writer: str | None,
           nice: int = 0) -> tuple[float, float]:
    """Total reader queries/s over ``seconds``, and the writer's vectors/s (if any)."""
    ctx = mp.get_context("spawn")
    start, stop, out, wout = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(path, seconds, i, start, out))
             for i in range(n_readers)]
    w = ctx.Process(target=_writer, args=(path, writer, nice, stop, start, wout)) \
        if writer else None
    for p in procs + ([w] if w else []):
        p.start()
    time.sleep(3)  # let every process open the index and warm up
    start.set()
    total = sum(out.get(timeout=seconds * 10) for _ in procs)
    stop.set()
    wrate = wout.get(timeout=120) if w else 0.0
    for p in procs + ([w] if w else []):
        p.join(120)
    return total, wrate


def readers_with_writer(workdir: str, seconds: float, seed: int) -> list[dict[str, Any]]:
    """Readers alone, beside a writer at normal priority, alone, beside a writer at nice 10
    (what ``lshdb add --nice 10`` does), and alone again. The index grows while a writer
    runs (queries get slower as it grows), so each writer's run is compared with the mean
    of the reader-only runs just before and just after it."""
    path = os.path.join(workdir, "serve.lshdb")
    shutil.rmtree(path, ignore_errors=True)
    X, _ = clustered(200_000, DIM, seed=seed)
    with lshdb.create(path, metric="cosine", dim=DIM) as index:  # calibrated defaults
        index.add(range(len(X)), X)
    rows = []
    for n_readers in (1, 2, 4):
        first, _ = _serve(path, n_readers, seconds, None)
        normal, w_normal = _serve(path, n_readers, seconds, f"w{n_readers}")
        middle, _ = _serve(path, n_readers, seconds, None)
        niced, w_niced = _serve(path, n_readers, seconds, f"n{n_readers}", nice=10)
        last, _ = _serve(path, n_readers, seconds, None)
        with lshdb.open(path, readonly=True) as index:
            size = len(index)
        rows.append({"readers": n_readers,
                     "queries/s alone (before, between, after)":
                     f"{first:,.0f}, {middle:,.0f}, {last:,.0f}",
                     "with writer": normal, "ratio": normal / ((first + middle) / 2),
                     "writer vectors/s": w_normal,
                     "with writer at nice 10": niced,
                     "ratio (nice 10)": niced / ((middle + last) / 2),
                     "writer vectors/s (nice 10)": w_niced, "index rows after": size})
    return rows


def compaction(workdir: str, n: int, seed: int) -> list[dict[str, Any]]:
    path = os.path.join(workdir, "compact.lshdb")
    shutil.rmtree(path, ignore_errors=True)
    X, _ = clustered(n, DIM, seed=seed)
    t0 = time.perf_counter()
    with lshdb.create(path, metric="cosine", dim=DIM) as index:
        index.add(range(n), X)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    gone = rng.choice(n, int(0.3 * n), replace=False)
    with lshdb.open(path) as index:
        t0 = time.perf_counter()
        index.delete(gone.tolist())
        delete_s = time.perf_counter() - t0
        report = index.compact()
        q = X[rng.choice(np.setdiff1d(np.arange(n), gone), 5)]
        assert all(index.query(v, k=1)[0][1] < 1e-5 for v in q)
    return [{"rows": n, "deleted": len(gone), "build s": build, "delete s": delete_s,
             "deletes/s": len(gone) / delete_s, "compact s": report["seconds"],
             "MB before": report["bytes_before"] / 2**20,
             "MB after": report["bytes_after"] / 2**20,
             "reclaimed %": 100 * (1 - report["bytes_after"] / report["bytes_before"])}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of: inserts,readers,compaction")
    args = ap.parse_args()
    skip = set(args.skip.split(",")) - {""}
    workdir = tempfile.mkdtemp(prefix="lshdb-guar-")
    body = []
    try:
        if "inserts" not in skip:
            rows = insert_rates(workdir, args.seed)
            body.append("### Inserts into a 128-d index of 100,000 rows (one commit per batch)\n\n"
                        + table(rows))
            print(body[-1], flush=True)
        if "readers" not in skip:
            rows = readers_with_writer(workdir, args.seconds, args.seed)
            body.append("### Reader processes with and without a writer inserting "
                        "(200,000 x 128, cosine, default parameters; 2 cores shared by all "
                        "processes)\n\n" + table(rows))
            print(body[-1], flush=True)
        if "compaction" not in skip:
            rows = compaction(workdir, args.rows, args.seed)
            body.append(f"### Compaction of {args.rows:,} rows after deleting 30%\n\n"
                        + table(rows))
            print(body[-1], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_result("guarantees", "Guarantees: inserts, readers beside a writer, compaction",
                 "\n\n".join(body), "python benchmarks/guarantees.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
