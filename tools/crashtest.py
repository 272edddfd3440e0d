#!/usr/bin/env python3
"""Crash harness: kill a writer with SIGKILL at random moments and verify the index.

A writer subprocess runs numbered batches (add, upsert, delete, mixed transactions and
compactions), each derived deterministically from (seed, batch number, the keys present),
and appends the batch number to an acknowledgement log *after* its commit returns. The
harness kills it at a random moment, reopens the index, runs the deep check, and replays
the acknowledged batches on a plain dict model: the index must equal the model after the
acknowledged batches, or after one more (a batch that committed but was killed before it
could log). Anything else — a lost acknowledged batch, a partly visible batch, a failed
check — is a failure.

usage: python tools/crashtest.py [--kills 25] [--seed 0] [--durability full|fast]
                                 [--min-run 0.05] [--max-run 1.5] [--dir DIR]
Exit status 0 when every kill verified; prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lshdb  # noqa: E402
import lshdb.storage.rows  # noqa: E402
from lshdb import check  # noqa: E402

DIM = 8


def plan(seed: int, batch: int, keys: list[str]) -> dict[str, Any]:
    """The operations of one batch, given the keys present before it (sorted)."""
    rng = np.random.default_rng([seed, batch])
    if batch % 17 == 16:
        return {"kind": "compact"}
    kind = rng.choice(["add", "add", "upsert", "delete", "mixed"])
    n_new = int(rng.integers(1, 300))
    new = [f"k{batch}-{i}" for i in range(n_new)]
    n_old = int(rng.integers(1, 60))
    if len(keys) > 4000 and rng.random() < 0.5:  # keep the index (and each check) small
        kind, n_old = "delete", int(rng.integers(200, 600))
    old = list(rng.choice(keys, min(len(keys), n_old), replace=False)) if keys else []
    vec = rng.standard_normal((n_new + len(old), DIM)).astype(np.float32)
    if kind == "add" or not keys:
        return {"kind": "add", "add": (new, vec[:n_new])}
    if kind == "upsert":
        both = old + new
        return {"kind": "upsert", "upsert": (both, vec[: len(both)])}
    if kind == "delete":
        return {"kind": "delete", "delete": old}
    return {"kind": "mixed", "add": (new, vec[:n_new]), "delete": old}


def apply_model(model: dict[str, np.ndarray], p: dict[str, Any]) -> None:
    if "delete" in p:
        for k in p["delete"]:
            del model[k]
    for op in ("add", "upsert"):
        if op in p:
            keys, vec = p[op]
            for k, v in zip(keys, vec):
                model[k] = v


def writer(path: str, seed: int, start: int, log: str, durability: str,
           early_flush: int | None = None) -> None:
    """Run batches start, start+1, ... forever (until killed)."""
    if early_flush is not None:  # flush rows in the background from this many bytes
        lshdb.storage.rows._EARLY_FLUSH = early_flush
    index = lshdb.open(path, durability=durability)
    keys = sorted(index.keys())
    with open(log + ".ready", "w") as f:  # the harness times its kill from here
        f.write("ready\n")
    batch = start
    with open(log, "a") as ack:
        while True:
            p = plan(seed, batch, keys)
            if p["kind"] == "compact":
                index.compact()
            else:
                with index.writer() as w:
                    if "delete" in p:
                        w.delete(p["delete"])
                    if "add" in p:
                        w.add(*p["add"])
                    if "upsert" in p:
                        w.upsert(*p["upsert"])
                present = set(keys)
                present.difference_update(p.get("delete", []))
                for op in ("add", "upsert"):
                    if op in p:
                        present.update(p[op][0])
                keys = sorted(present)
            ack.write(f"{batch}\n")  # only after the commit returned
            ack.flush()
            batch += 1


def _logged(log: str) -> int:
    with open(log) as f:
        return len(f.read().split())


def state_of(path: str) -> dict[str, np.ndarray]:
    with lshdb.open(path, readonly=True) as index:
        return {k: index.get(k) for k in index.keys()}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run(kills: int, seed: int, durability: str, min_run: float, max_run: float,
        workdir: str, early_flush: int | None = None,
        batches_per_kill: int = 0) -> dict[str, Any]:
    path = os.path.join(workdir, "crash.lshdb")
    log = os.path.join(workdir, "ack.log")
    shutil.rmtree(path, ignore_errors=True)
    open(log, "w").close()
    lshdb.create(path, metric="l2", dim=DIM).close()
    rng = random.Random(seed)
    model: dict[str, np.ndarray] = {}
    acked = 0  # batches known committed: 0 .. acked-1
    stats = {"kills": 0, "batches_acked": 0, "unacked_committed": 0, "compactions": 0,
             "max_items": 0, "check_failures": 0, "mismatches": 0}
    for _ in range(kills):
        ready = log + ".ready"
        if os.path.exists(ready):
            os.unlink(ready)
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--writer", path, "--seed", str(seed),
             "--start", str(acked), "--log", log, "--durability", durability,
             *(["--early-flush", str(early_flush)] if early_flush is not None else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not os.path.exists(ready) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # kill only once the writer is at work, not during start-up
        while _logged(log) < acked + batches_per_kill and proc.poll() is None \
                and time.monotonic() < deadline:  # and has acknowledged this many batches
            time.sleep(0.005)
        time.sleep(rng.uniform(min_run, max_run))
        if proc.poll() is not None:
            raise RuntimeError(f"the writer exited by itself: {proc.stderr.read().decode()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        stats["kills"] += 1
        with open(log) as f:
            logged = [int(x) for x in f.read().split()]
        for b in logged[acked:]:
            p = plan(seed, b, sorted(model))
            apply_model(model, p)
            stats["compactions"] += p["kind"] == "compact"
        acked = len(logged)
        lshdb.open(path).close()  # reopen for writing: recovery removes a crash's leftovers
        report = check(path)
        if not report["ok"]:
            stats["check_failures"] += 1
            raise AssertionError(f"deep check failed after kill {stats['kills']}: {report['problems']}")
        actual = state_of(path)
        if not same(actual, model):
            nxt = dict(model)
            p = plan(seed, acked, sorted(model))
            apply_model(nxt, p)
            if not same(actual, nxt):
                stats["mismatches"] += 1
                lost = sorted(model.keys() - actual.keys())[:5]
                extra = sorted(actual.keys() - nxt.keys())[:5]
                raise AssertionError(
                    f"after kill {stats['kills']} the index is neither the state after batch "
                    f"{acked - 1} nor after {acked}: missing {lost}, unexpected {extra}")
            # the in-flight batch committed before the kill: record it as done
            model = nxt
            stats["compactions"] += p["kind"] == "compact"
            with open(log, "a") as f:
                f.write(f"{acked}\n")
            acked += 1
            stats["unacked_committed"] += 1
        stats["max_items"] = max(stats["max_items"], len(model))
    stats["batches_acked"] = acked
    stats["batches_per_kill"] = round(acked / max(stats["kills"], 1), 2)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--durability", choices=["full", "fast"], default="full")
    ap.add_argument("--min-run", type=float, default=0.05)
    ap.add_argument("--max-run", type=float, default=1.5)
    ap.add_argument("--batches-per-kill", type=int, default=0,
                    help="let the writer acknowledge this many batches before each random wait")
    ap.add_argument("--dir")
    ap.add_argument("--early-flush", type=int, metavar="BYTES",
                    help="start the background flush of rows from writes of this many bytes "
                         "(default: lshdb's own threshold, which the harness's batches stay "
                         "below)")
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer:
        writer(args.writer, args.seed, args.start, args.log, args.durability, args.early_flush)
        return
    workdir = args.dir or tempfile.mkdtemp(prefix="lshdb-crash-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    try:
        stats = run(args.kills, args.seed, args.durability, args.min_run, args.max_run, workdir,
                    args.early_flush, args.batches_per_kill)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    stats["seconds"] = round(time.time() - t0, 1)
    stats["durability"] = args.durability
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
