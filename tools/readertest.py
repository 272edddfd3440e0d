#!/usr/bin/env python3
"""Concurrent readers: reader processes check every answer against the committed states.

A writer commits batches 0, 1, 2, ...: batch j adds B items ``b{j}-{i}`` clustered at a
point of their own; batch J also deletes batch J-6 when J is a multiple of 3; every 25th
batch is followed by a compaction. So the committed states are exactly
``live(J) = {j <= J} - {j : j % 3 == 0 and j + 6 <= J}``.

Reader processes query continuously, each in its own snapshots, with exhaustive LSH
parameters (so an answer is exact), and check:

* the keys of a snapshot form whole batches and equal ``live(J)`` for some J (no torn
  write, no deleted key, no missing committed key);
* a query at a live batch's point returns exactly that batch's B items;
* a query at a deleted batch's point returns none of its items.

``--map-size`` starts every process with a small LMDB map, so the writer grows it many
times while readers in other processes read (they must adopt the new size).

usage: python tools/readertest.py [--readers 4] [--seconds 10] [--map-size BYTES]
                                  [--queries-per-snapshot 20] [--writer-pause 0]
Prints one JSON line: answers checked, inconsistencies, queries/s. Exit status 1 on any
inconsistency.
"""

from __future__ import annotations

import argparse
import json
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

B = 20
DIM = 8


def centre(j: int) -> np.ndarray:
    return (np.random.default_rng(j).standard_normal(DIM) * 100).astype(np.float32)


def live(J: int) -> set[int]:
    return {j for j in range(J + 1) if not (j % 3 == 0 and j + 6 <= J)}


def batch_keys(j: int) -> list[str]:
    return [f"b{j}-{i}" for i in range(B)]


def writer(path: str, stop: Any, counter: Any, map_size: int | None, batches: int,
           pause: float = 0.0) -> None:
    try:
        _write(path, stop, counter, map_size, batches, pause)
    finally:
        stop.set()  # a failed writer stops the run (its exit status tells)


def _write(path: str, stop: Any, counter: Any, map_size: int | None, batches: int,
           pause: float) -> None:
    index = lshdb.open(path, map_size=map_size)
    rng = np.random.default_rng(12345)
    j = 0
    while not stop.is_set() and (batches == 0 or j < batches):
        vecs = centre(j) + rng.standard_normal((B, DIM)).astype(np.float32) * 0.01
        with index.writer() as w:
            w.add(batch_keys(j), vecs)
            if j % 3 == 0 and j >= 6:
                w.delete(batch_keys(j - 6))
        with counter.get_lock():
            counter.value = j + 1
        if j % 25 == 24:
            index.compact()
        j += 1
        if pause:
            stop.wait(pause)
    index.close()


def reader(path: str, stop: Any, seed: int, map_size: int | None, per_snapshot: int,
           out: Any, answered: Any = None) -> None:
    answers = bad = 0
    notes: list[str] = []
    t0 = time.perf_counter()
    try:
        answers, bad = _read(path, stop, seed, map_size, per_snapshot, notes, answered)
    except BaseException as exc:  # report, so the harness never waits for a dead reader
        import traceback

        notes.append("reader failed: " + "".join(traceback.format_exception(exc))[-1500:])
        bad += 1
    out.put({"answers": answers, "inconsistent": bad, "seconds": time.perf_counter() - t0,
             "notes": notes[:5]})


def _read(path: str, stop: Any, seed: int, map_size: int | None, per_snapshot: int,
          notes: list[str], answered: Any = None) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    index = lshdb.open(path, readonly=True, map_size=map_size)
    answers = bad = 0
    while not stop.is_set():
        with index.reader() as r:
            keys = list(r.keys())
            seen: dict[int, int] = {}
            for k in keys:
                jj = int(k.split("-")[0][1:])
                seen[jj] = seen.get(jj, 0) + 1
            answers += 1
            if not seen:
                continue
            J = max(seen)
            if set(seen) != live(J) or any(c != B for c in seen.values()) or len(r) != len(keys):
                bad += 1
                notes.append(f"snapshot of {len(keys)} keys is not live({J})")
            for _ in range(per_snapshot):
                j = int(rng.integers(0, J + 1))
                hits = {k for k, _ in r.query(centre(j), k=B, probes=4)}
                want = set(batch_keys(j))
                ok = hits == want if j in live(J) else not (hits & want)
                answers += 1
                if not ok:
                    bad += 1
                    notes.append(f"query for batch {j} in live({J}) returned {sorted(hits)[:3]}")
        if answered is not None:  # shared progress: the harness may wait for it
            with answered.get_lock():
                answered.value = answered.value + 1 + per_snapshot
    index.close()
    return answers, bad


def run(readers: int, seconds: float, map_size: int | None, workdir: str,
        writer_batches: int = 0, per_snapshot: int = 20,
        writer_pause: float = 0.0, min_batches: int = 0, min_answers: int = 0,
        deadline: float = 300.0) -> dict[str, Any]:
    """Run for ``seconds``, and on until the writer has committed ``min_batches`` and the
    readers have checked ``min_answers`` (or ``deadline`` seconds have passed)."""
    path = os.path.join(workdir, "readers.lshdb")
    shutil.rmtree(path, ignore_errors=True)
    opts: dict[str, Any] = {"k": 1, "L": 2, "w": 1e9}  # exhaustive: every query scans all
    if map_size:
        opts["map_size"] = map_size
    lshdb.create(path, metric="l2", dim=DIM, **opts).close()
    ctx = mp.get_context("spawn")
    stop, counter, out = ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    answered = ctx.Value("q", 0)
    w = ctx.Process(target=writer,
                    args=(path, stop, counter, map_size, writer_batches, writer_pause))
    w.start()
    rs = [ctx.Process(target=reader, args=(path, stop, i, map_size, per_snapshot, out, answered))
          for i in range(readers)]
    for p in rs:
        p.start()
    t0 = time.monotonic()
    stop.wait(seconds)
    while not stop.is_set() and time.monotonic() - t0 < deadline and (
            counter.value < min_batches or answered.value < min_answers):
        stop.wait(0.05)
    stop.set()
    results = [out.get(timeout=120) for _ in rs]
    for p in rs + [w]:
        p.join(timeout=120)
    size = os.path.getsize(os.path.join(path, lshdb.open(path, readonly=True).generation,
                                        "data.mdb"))
    return {
        "readers": readers,
        "answers": sum(r["answers"] for r in results),
        "inconsistent": sum(r["inconsistent"] for r in results),
        "queries_per_s": round(sum(r["answers"] / r["seconds"] for r in results), 1),
        "batches_committed": counter.value,
        "writer_exit": w.exitcode,
        "reader_exits": [p.exitcode for p in rs],
        "data_mdb_bytes": size,
        "notes": [n for r in results for n in r["notes"]][:5],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--map-size", type=int, default=None)
    ap.add_argument("--queries-per-snapshot", type=int, default=20,
                    help="queries checked in each snapshot (each snapshot also lists every key)")
    ap.add_argument("--writer-pause", type=float, default=0.0,
                    help="seconds the writer waits after each batch: the index (which every "
                         "exhaustive query scans) then grows slowly, so long runs check more "
                         "answers while the writer still commits and compacts throughout")
    ap.add_argument("--dir")
    args = ap.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="lshdb-readers-")
    os.makedirs(workdir, exist_ok=True)
    try:
        result = run(args.readers, args.seconds, args.map_size, workdir,
                     per_snapshot=args.queries_per_snapshot, writer_pause=args.writer_pause)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    sys.exit(0 if result["inconsistent"] == 0 and result["writer_exit"] == 0 else 1)


if __name__ == "__main__":
    main()
