"""Guarantees benchmark: insert rates by batch size and durability, readers beside a writer,
compaction of a large index with deletions.

1. inserts/s into a 128-d index that already holds 100,000 rows, for batches of 1, 100 and
   10,000 vectors (one commit each), with durability "full" and "fast"; vectors/s over
   all the commits, so the commits that merge the waiting runs (lshdb.runs) count;
2. queries/s of 1, 2 and 4 reader processes, with no writer and while one writer process
   inserts batches of 1,000 (full durability): as fast as it can at normal priority, as
   fast as it can at nice 10 (a background loader, ``lshdb add --nice 10``), and at a
   steady 10,000 and 1,000 vectors/s at normal priority, into an index of 1,000,000 rows to begin
   with (``--serve-rows``); the index grows while the writer runs, so
   each writer's run is bracketed by reader-only runs and its ratio uses their mean; the
   readers' and the writer's CPU time are reported beside the rates;
3. 1,000-vector batches into a 200,000-row index with the runs (lshdb.runs) and with each
   batch appended to the tables (the layout before runs), in the same process: time, CPU
   and bytes written per batch, query latency with 0 to 4 runs waiting, and query latency
   once the runs are merged, before and after a compaction (the batches leave a tail chunk
   beside most buckets' bulk-loaded chunk; compaction writes one chunk per bucket again);
4. compaction of an index of N rows (default 1,000,000) after deleting 30% of them: time,
   and bytes on disk before and after.

usage: python benchmarks/guarantees.py [--rows 1000000] [--serve-rows 1000000] [--seconds 8]
                                      [--seed 0]
Writes benchmarks/results/guarantees.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import median, table, write_result  # noqa: E402
from lshdb.io.datasets import clustered  # noqa: E402

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
            for batch, commits in ((1, 360), (100, 70), (10_000, 2)):
                times = []
                for _ in range(commits):
                    keys = range(nxt, nxt + batch)
                    vecs = X[nxt : nxt + batch]  # new vectors (27,360 of the 30,000 spare)
                    t0 = time.perf_counter()
                    index.add(keys, vecs)
                    times.append(time.perf_counter() - t0)
                    nxt += batch
                # vectors/s over all commits: small batches wait in runs and every
                # (RUN_MAX + 1)-th commit merges them (whole cycles here), so a median
                # commit would leave the merges out
                rows.append({"durability": durability, "batch": batch, "commits": commits,
                             "median commit ms": median(times) * 1e3,
                             "slowest commit ms": max(times) * 1e3,
                             "vectors/s": batch * commits / sum(times)})
    return rows


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reader(path: str, seconds: float, seed: int, start: Any, out: Any) -> None:
    rng = np.random.default_rng(seed)
    Q, _ = clustered(2000, DIM, seed=1000 + seed)
    index = lshdb.open(path, readonly=True)
    index.query(Q[0])
    start.wait()
    n = 0
    c0, t0 = _cpu(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        index.query(Q[int(rng.integers(len(Q)))], k=10)
        n += 1
    out.put((n, _cpu() - c0, time.perf_counter() - t0))


def _writer(path: str, tag: str, nice: int, pace: float, stop: Any, start: Any,
            out: Any) -> None:
    """Add batches of 1,000 until stopped: as fast as it can, or ``pace`` vectors/s."""
    if nice:
        os.nice(nice)
    X, _ = clustered(200_000, DIM, seed=77)
    index = lshdb.open(path)
    start.wait()
    n = 0
    c0, t0 = _cpu(), time.perf_counter()
    while not stop.is_set():
        if pace:
            wait = t0 + n / pace - time.perf_counter()
            if wait > 0:
                stop.wait(wait)
                continue
        s = n % 190_000
        index.add([f"{tag}-{n + i}" for i in range(1000)], X[s : s + 1000])
        n += 1000
    out.put((n, _cpu() - c0, time.perf_counter() - t0))
    index.close()


def _serve(path: str, n_readers: int, seconds: float, writer: str | None = None,
           nice: int = 0, pace: float = 0.0) -> dict[str, float]:
    """Readers' total queries/s over ``seconds``, their CPU (cores in use, CPU time per
    query), and the writer's vectors/s and CPU cores (if there is a writer)."""
    ctx = mp.get_context("spawn")
    start, stop, out, wout = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(path, seconds, i, start, out))
             for i in range(n_readers)]
    w = ctx.Process(target=_writer, args=(path, writer, nice, pace, stop, start, wout)) \
        if writer else None
    for p in procs + ([w] if w else []):
        p.start()
    time.sleep(3)  # let every process open the index and warm up
    start.set()
    got = [out.get(timeout=seconds * 10) for _ in procs]
    stop.set()
    wn, wcpu, wsec = wout.get(timeout=120) if w else (0, 0.0, 1.0)
    for p in procs + ([w] if w else []):
        p.join(120)
    queries, cpu = sum(g[0] for g in got), sum(g[1] for g in got)
    secs = max(g[2] for g in got)
    return {"qps": sum(g[0] / g[2] for g in got), "cores": cpu / secs,
            "us_per_query": 1e6 * cpu / max(queries, 1),
            "writer_vps": wn / wsec, "writer_cores": wcpu / wsec}


WRITERS = (("as fast as it can", 0, 0.0), ("as fast as it can, nice 10", 10, 0.0),
           ("10,000 vectors/s", 0, 10_000.0), ("1,000 vectors/s", 0, 1_000.0))


def readers_with_writer(workdir: str, seconds: float, seed: int,
                        base: int) -> list[dict[str, Any]]:
    """For 1, 2 and 4 readers: readers alone, then beside each writer of ``WRITERS`` in
    turn, with a reader-only run after each. The index grows while a writer runs (queries
    get slower as it grows), so each writer's run is compared with the mean of the
    reader-only runs just before and just after it. The CPU columns say where the time
    went: the readers' CPU time per query (the same with and without a writer means the
    writer does not slow a query down, only takes CPU) and the cores each side used."""
    path = os.path.join(workdir, "serve.lshdb")
    shutil.rmtree(path, ignore_errors=True)
    X, _ = clustered(base, DIM, seed=seed)
    with lshdb.create(path, metric="cosine", dim=DIM) as index:  # calibrated defaults
        index.add(range(len(X)), X)
    rows = []
    for n_readers in (1, 2, 4):
        before = _serve(path, n_readers, seconds)
        for j, (label, nice, pace) in enumerate(WRITERS):
            run = _serve(path, n_readers, seconds, f"w{j}r{n_readers}", nice, pace)
            after = _serve(path, n_readers, seconds)
            alone = (before["qps"] + after["qps"]) / 2
            alone_us = (before["us_per_query"] + after["us_per_query"]) / 2
            rows.append({"readers": n_readers, "writer": label,
                         "queries/s alone (before, after)":
                         f"{before['qps']:,.0f}, {after['qps']:,.0f}",
                         "queries/s with writer": run["qps"], "ratio": run["qps"] / alone,
                         "reader CPU us/query (alone, with)":
                         f"{alone_us:,.0f}, {run['us_per_query']:,.0f}",
                         "reader cores (alone, with)":
                         f"{before['cores']:.2f}, {run['cores']:.2f}",
                         "writer vectors/s": run["writer_vps"],
                         "writer cores": run["writer_cores"]})
            before = after
    return rows


def _written() -> int:
    """Bytes this process has caused to be written to storage so far (Linux)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes")).split()[1])


def _query_p50(index: Any, Q: np.ndarray) -> float:
    """Median milliseconds of one k=10 query over the queries ``Q``."""
    ts = []
    for q in Q:
        t = time.perf_counter()
        index.query(q, k=10)
        ts.append(time.perf_counter() - t)
    return 1e3 * median(ts)


def small_batches(workdir: str, seed: int, base: int = 200_000,
                  batches: int = 50) -> list[dict[str, Any]]:
    """1,000-vector batches into an index of ``base`` rows with the runs (lshdb.runs) and
    with every batch appended to the tables (``RUN_MAX = 0``, the layout before runs), in
    the same process: wall time, CPU time and bytes written per batch over whole merge
    cycles; then query latency by the number of runs waiting."""
    from lshdb.storage import runs

    X, _ = clustered(base + (batches + runs.RUN_MAX + 1) * 1000, DIM, seed=seed)
    Q, _ = clustered(500, DIM, seed=seed + 1)
    keep = runs.RUN_MAX
    rows = []
    try:
        for label, run_max in (("appended to the tables", 0), ("runs", keep)):
            runs.RUN_MAX = run_max
            path = os.path.join(workdir, f"small-{run_max}.lshdb")
            shutil.rmtree(path, ignore_errors=True)
            with lshdb.create(path, metric="cosine", dim=DIM) as index:
                index.add(range(base), X[:base])
            with lshdb.open(path) as index:
                n = batches // (keep + 1) * (keep + 1)  # whole merge cycles
                w0, c0, t0 = _written(), _cpu(), time.perf_counter()
                for b in range(n):
                    s = base + 1000 * b
                    index.add(range(s, s + 1000), X[s : s + 1000])
                wall, cpu, wrote = time.perf_counter() - t0, _cpu() - c0, _written() - w0
                row = {"1,000-vector batches": label, "batches": n,
                       "ms per batch": 1e3 * wall / n, "CPU ms per batch": 1e3 * cpu / n,
                       "MB written per batch": wrote / n / 1e6}
                if run_max:  # query p50 with 0 .. RUN_MAX runs waiting
                    lat = []
                    for b in range(run_max + 1):
                        lat.append(f"{_query_p50(index, Q):.2f}")
                        s = base + 1000 * (n + b)
                        index.add(range(s, s + 1000), X[s : s + 1000])
                    row["query p50 ms with 0..4 runs waiting"] = ", ".join(lat)
                    # the batches gave most touched buckets a tail chunk beside the
                    # bulk-loaded one; compaction writes each bucket as one chunk again
                    assert index.stats(buckets=False)["runs"] == 0  # the last add merged
                    before = _query_p50(index, Q)
                    index.compact()
                    row["query p50 ms, runs merged: before, after compaction"] = \
                        f"{before:.2f}, {_query_p50(index, Q):.2f}"
                rows.append(row)
            shutil.rmtree(path, ignore_errors=True)
    finally:
        runs.RUN_MAX = keep
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
    ap.add_argument("--serve-rows", type=int, default=1_000_000,
                    help="rows of the index the readers query before any writer runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="",
                    help="comma list of: inserts,readers,small,compaction")
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
            rows = readers_with_writer(workdir, args.seconds, args.seed, args.serve_rows)
            body.append("### Reader processes with and without a writer inserting "
                        f"({args.serve_rows:,} x 128 to begin with, cosine, default "
                        "parameters; 2 cores shared by all processes)\n\n" + table(rows))
            print(body[-1], flush=True)
        if "small" not in skip:
            rows = small_batches(workdir, args.seed)
            body.append("### Small batches: runs against appends to the tables (200,000 x "
                        "128, cosine, default parameters; same process)\n\n" + table(rows))
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
