"""The fixed cost of one query: ``Reader.query`` and ``Index.query`` against numpy.

Two seeded cosine indexes, one query per call, every system timed on every query in turn,
round after round (medians of each round's median, ratios taken within each round):

* ``scan 2k``: 2,000 x 384 random vectors, default settings (the calibration chooses the
  exact scan), against numpy brute force over the same normalised rows;
* ``codes 50k``: 50,000 x 384 clustered vectors with ``codes=256``, ``scan=True`` and
  ``rerank=150`` (a Hamming scan of every code, then an exact re-rank of the best 150),
  against numpy brute force over its rows.

numpy runs on one thread, as lshdb's queries do (``lshdb.index.blas``): with its default
threads a product of this size only spins them on this shared machine. ``--profile`` prints
where a ``Reader.query`` spends its time (cProfile, by own time) instead of the table, and
``--steps`` times each step of the 2,000-row scan in turn inside the query loop.

usage: python benchmarks/query_cost.py [--queries 300] [--rounds 5] [--profile | --steps]
                                       [--out query_cost]
Writes benchmarks/results/query_cost.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import median, table, write_result  # noqa: E402
from lshdb.index.blas import single_threaded  # noqa: E402
from lshdb.io.datasets import clustered  # noqa: E402

Query = Callable[[np.ndarray], Any]


def scan_2k(n_queries: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """2,000 x 384 random vectors and queries, default settings."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 384)).astype(np.float32)
    return X, rng.standard_normal((n_queries, 384)).astype(np.float32), {}


def codes_50k(n_queries: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """50,000 x 384 clustered vectors and queries; 256-bit codes, scan, re-rank 150."""
    X, Q = clustered(50_000, 384, seed=0, n_queries=n_queries)
    return X, Q, {"codes": 256, "scan": True, "rerank": 150}


SETS = {"scan 2k": scan_2k, "codes 50k": codes_50k}


def build(path: str, X: np.ndarray, options: dict[str, Any]) -> Any:
    index = lshdb.create(path, metric="cosine", dim=X.shape[1], **options)
    index.add(range(len(X)), X)
    return index


def numpy_brute(X: np.ndarray) -> Query:
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)

    def f(q: np.ndarray) -> list[int]:
        with single_threaded():
            s = Xn @ (q / np.linalg.norm(q))
            p = np.argpartition(-s, 9)[:10]
            return p[np.argsort(-s[p])].tolist()  # type: ignore[no-any-return]

    return f


def _time(f: Query, q: np.ndarray) -> float:
    t0 = time.perf_counter()
    f(q)
    return time.perf_counter() - t0


def measure(name: str, X: np.ndarray, Q: np.ndarray, index: Any, rounds: int
            ) -> list[dict[str, Any]]:
    with index.reader() as r:
        fs: dict[str, Query] = {"Reader.query": lambda q: r.query(q, 10),
                                "Index.query": lambda q: index.query(q, 10),
                                "numpy brute force": numpy_brute(X)}
        for f in fs.values():  # warm-up
            for q in Q[:50]:
                f(q)
        per_round: dict[str, list[float]] = {s: [] for s in fs}
        for rnd in range(rounds):
            med = {s: median([_time(f, q) for q in Q]) for s, f in fs.items()}
            for s, v in med.items():
                per_round[s].append(v)
            print(f"  [{name}] round {rnd + 1}: "
                  + ", ".join(f"{s} {v * 1e6:.0f} us" for s, v in med.items()), flush=True)
    brute = per_round["numpy brute force"]
    return [{"index": name, "call": s, "p50 us": median(v) * 1e6,
             "x numpy": median([b / a for a, b in zip(v, brute)]),
             "rounds' p50 us": ", ".join(f"{a * 1e6:.0f}" for a in v)}
            for s, v in per_round.items()]


def profile(name: str, Q: np.ndarray, index: Any) -> None:
    import cProfile
    import pstats

    with index.reader() as r:
        for q in Q:
            r.query(q, 10)
        prof = cProfile.Profile()
        prof.enable()
        for q in Q:
            r.query(q, 10)
        prof.disable()
    print(f"[{name}] Reader.query, {len(Q)} queries")
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)


def steps(name: str, Q: np.ndarray, index: Any, rounds: int) -> None:
    """Each step of an exact-scan query timed in turn inside the query loop (the steps of
    ``Reader.query``'s scan path, called one by one through lshdb's internals)."""
    from lshdb.hashing.codes import nearest
    from lshdb.index import blas

    pc = time.perf_counter_ns
    names = ["one thread", "prepare", "product", "nearest 10", "sort 10", "checksums",
             "keys", "result", "threads back"]
    acc: dict[str, list[int]] = {n: [] for n in names}
    with index.reader() as r:
        for _ in range(rounds):
            for q in Q:
                t = [pc()]
                blas.enter_single()
                t.append(pc())
                x = r.metric.prepare_one(q)
                t.append(pc())
                d = r._scan_distances(x)
                t.append(pc())
                ids = nearest(d, 10)
                t.append(pc())
                dd = d[ids]
                top = np.lexsort((ids, dd))
                best = ids[top]
                t.append(pc())
                r.rows.verify(best, r.n_rows)
                t.append(pc())
                keys = r._keys_of(best.tolist())
                t.append(pc())
                list(zip(keys, dd[top].tolist()))
                t.append(pc())
                blas.exit_single()
                t.append(pc())
                for i, n in enumerate(names):
                    acc[n].append(t[i + 1] - t[i])
    print(f"[{name}] us per step, medians of {rounds * len(Q)} queries: "
          + ", ".join(f"{n} {median(v) / 1e3:.1f}" for n, v in acc.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile instead of the table")
    ap.add_argument("--steps", action="store_true",
                    help="time each step of the 2,000-row scan instead of the table")
    ap.add_argument("--out", default="query_cost", help="results/NAME.md to write")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lshdb-qcost-")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for name, make in SETS.items():
            if args.steps and name != "scan 2k":
                continue
            X, Q, options = make(args.queries)
            index = build(os.path.join(work, name.replace(" ", "-")), X, options)
            try:
                cal = index.stats(buckets=False).get("calibration") or {}
                notes.append(f"{name}: {len(X):,} x {X.shape[1]}, options {options or 'none'}, "
                             f"settings {index.settings}, calibrated path "
                             f"{cal.get('path', '-')}")
                if args.steps:
                    steps(name, Q, index, args.rounds)
                elif args.profile:
                    profile(name, Q, index)
                else:
                    rows += measure(name, X, Q, index, args.rounds)
            finally:
                index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.profile or args.steps:
        return
    body = (f"{args.queries} queries, {args.rounds} rounds, one query per call; numpy on "
            f"one thread.\n\n{table(rows)}\n\n" + "\n".join(f"- {n}" for n in notes))
    cmd = "python benchmarks/query_cost.py " + " ".join(sys.argv[1:])
    write_result(args.out, "Fixed cost per query", body, cmd.strip())


if __name__ == "__main__":
    main()
