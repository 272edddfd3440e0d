"""Real sentence embeddings: lshdb's default index against its peers, one query at a time.

Sets: ``minilm`` (../shared/data/debian_minilm_dev.npz, 20,000 x 384) and ``real-200k``
(200,000 MiniLM embeddings of this machine's text, made by benchmarks/real_embeddings.py
and cached outside the repository). For each set, in one process:

* builds lshdb's default index (only metric and dim given; also queried with the settings
  its tuner chooses for recall 0.9), the same with float16 rows,
  the same grown from empty in batches (the writer retunes as it grows), and the peers:
  numpy, faiss IndexFlatIP, faiss IndexLSH (256 and 512 bits, top-T and an exact numpy
  re-rank), hnswlib, and usearch (saved, then opened as a memory-mapped view);
* times every query on every system in turn, round after round (medians of each round's
  median, ratios taken within each round), so that the machine's drift slows all alike;
* batched: lshdb's query_batch against numpy's one product per 256 queries.

faiss runs on one thread, as lshdb's queries do: with its default threads, one query per
call ran several times slower than numpy on this shared 2-core machine.

Recall@10 is against the exact cosine neighbours. A peer with settings (IndexLSH's bits
and T, hnswlib's ef) is shown at its fastest setting that reaches recall 0.9.

usage: python benchmarks/embeddings.py [--sets minilm,real-200k] [--queries 300]
                                       [--rounds 3] [--fixed] [--out embeddings]
Writes benchmarks/results/embeddings.md (or --out).
"""

from __future__ import annotations

import argparse
import json
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
from benchmarks.common import in_subprocess, median, minilm, table, write_result  # noqa: E402

Query = Callable[[np.ndarray], list[int]]


def exact(Xn: np.ndarray, Q: np.ndarray, k: int = 10) -> np.ndarray:
    out = np.empty((len(Q), k), dtype=np.int64)
    for s in range(0, len(Q), 256):
        D = Q[s : s + 256] @ Xn.T
        p = np.argpartition(-D, k - 1, axis=1)[:, :k]
        out[s : s + 256] = np.take_along_axis(
            p, np.argsort(-np.take_along_axis(D, p, 1), axis=1), 1)
    return out


def recall(got: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(t.tolist())) / 10 for g, t in zip(got, truth)]))


def load(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    if name == "minilm":
        real = minilm()
        return None if real is None else (real[0], real[1])
    from benchmarks.real_embeddings import load as load_real

    try:
        X, Q = load_real(200_000)
    except FileNotFoundError as exc:
        print(f"{name}: {exc}; skipped")
        return None
    return X.astype(np.float32), Q.astype(np.float32)


def lshdb_build(path: str, X: np.ndarray, batch: int | None = None, **options: Any
                ) -> tuple[float, Any]:
    t0 = time.perf_counter()
    index = lshdb.create(path, metric="cosine", dim=X.shape[1], **options)
    step = batch or len(X)
    for s in range(0, len(X), step):
        index.add(range(s, min(len(X), s + step)), X[s : s + step])
    return time.perf_counter() - t0, index


def peers(X: np.ndarray, Xn: np.ndarray, Q: np.ndarray, truth: np.ndarray, work: str
          ) -> tuple[dict[str, Query], dict[str, float], dict[str, str]]:
    """Query functions, build seconds and chosen settings of the peers."""
    import faiss
    import hnswlib
    from usearch.index import Index as USearch

    faiss.omp_set_num_threads(1)  # one query per call: threads only spin (lshdb uses one)
    systems: dict[str, Query] = {}
    builds: dict[str, float] = {}
    notes: dict[str, str] = {}

    def top(D: np.ndarray) -> list[int]:
        p = np.argpartition(-D, 9)[:10]
        return p[np.argsort(-D[p])].tolist()

    systems["numpy"] = lambda q: top(Xn @ q)
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(Xn)
    builds["faiss IndexFlatIP"] = time.perf_counter() - t0
    systems["faiss IndexFlatIP"] = lambda q: flat.search(q[None], 10)[1][0].tolist()
    best: tuple[float, str, Query] | None = None
    for bits in (256, 512):
        t0 = time.perf_counter()
        lsh = faiss.IndexLSH(X.shape[1], bits)
        lsh.add(Xn)
        builds[f"faiss IndexLSH {bits}"] = time.perf_counter() - t0
        for T in (50, 100, 200, 400, 800):
            def f(q: np.ndarray, lsh: Any = lsh, T: int = T) -> list[int]:
                cand = lsh.search(q[None], T)[1][0]
                return cand[top(Xn[cand] @ q)].tolist()

            got = [f(q) for q in Q[:100]]
            if recall(got, truth[:100]) >= 0.9:
                t = median([_time(f, q) for q in Q[:100]])
                if best is None or t < best[0]:
                    best = (t, f"{bits} bits, top {T}", f)
                break
    if best is not None:
        systems["faiss IndexLSH"] = best[2]
        notes["faiss IndexLSH"] = best[1]
    t0 = time.perf_counter()
    hnsw = hnswlib.Index(space="ip", dim=X.shape[1])
    hnsw.init_index(max_elements=len(X), ef_construction=100, M=16, random_seed=0)
    hnsw.add_items(Xn, np.arange(len(X)))
    builds["hnswlib"] = time.perf_counter() - t0
    for ef in (10, 20, 40, 80, 160):
        hnsw.set_ef(ef)
        got = [hnsw.knn_query(q, 10)[0][0].tolist() for q in Q[:100]]
        if recall(got, truth[:100]) >= 0.9:
            break
    notes["hnswlib"] = f"M=16, ef_construction=100, ef={ef}"
    systems["hnswlib"] = lambda q: hnsw.knn_query(q, 10)[0][0].tolist()
    t0 = time.perf_counter()
    us = USearch(ndim=X.shape[1], metric="cos", dtype="f16")
    us.add(np.arange(len(X)), Xn)
    upath = os.path.join(work, "usearch.bin")
    us.save(upath)
    builds["usearch"] = time.perf_counter() - t0
    view = USearch.restore(upath, view=True)
    assert view is not None
    notes["usearch"] = "f16, memory-mapped view"
    systems["usearch (view)"] = lambda q: view.search(q, 10).keys.tolist()
    return systems, builds, notes


def _time(f: Query, q: np.ndarray) -> float:
    t0 = time.perf_counter()
    f(q)
    return time.perf_counter() - t0


def run_set(name: str, X: np.ndarray, Q: np.ndarray, rounds: int, work: str
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    print(f"[{name}] {len(X):,} x {X.shape[1]}, {len(Q)} queries", flush=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    truth = exact(Xn, Q)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    notes: list[str] = []
    builds: dict[str, float] = {}
    idx: dict[str, Any] = {}
    builds["lshdb default"], idx["lshdb default"] = lshdb_build(os.path.join(work, "d"), X)
    builds["lshdb float16"], idx["lshdb float16"] = lshdb_build(
        os.path.join(work, "h"), X, dtype="float16")
    batch = 1_000 if len(X) <= 50_000 else 10_000
    builds[f"lshdb grown ({batch:,}/batch)"], idx[f"lshdb grown ({batch:,}/batch)"] = \
        lshdb_build(os.path.join(work, "g"), X, batch=batch)
    for label, index in idx.items():
        cal = index.stats(buckets=False)["calibration"]
        notes.append(f"{label}: path {cal.get('path')}, codes {cal.get('codes')}, "
                     f"re-rank {index.settings.get('rerank')}, predicted recall "
                     f"{cal['paths'][_path_key(cal)]['recall'] if 'paths' in cal else '?'}, "
                     f"calibrated for {cal.get('live_rows'):,} rows, generation "
                     f"{index.generation}; predicted us per path: "
                     + ", ".join(f"{k} {v['us']:.0f} ({v['recall']:.3f})"
                                 for k, v in cal.get("paths", {}).items()))
    first = json.loads(in_subprocess(
        "import json, time, numpy as np; t0 = time.perf_counter(); import lshdb\n"
        f"i = lshdb.open({os.path.join(work, 'd')!r}, readonly=True)\n"
        "i.query(np.ones(%d, dtype=np.float32), k=10)\n"
        "print(json.dumps(time.perf_counter() - t0))" % X.shape[1]))
    notes.append(f"open in a fresh process (import included) + first query: "
                 f"{first * 1e3:.0f} ms")
    systems, peer_builds, peer_notes = peers(X, Xn, Qn, truth, work)
    builds.update(peer_builds)
    # the best setting at recall 0.9: the default index's query settings chosen by its tuner
    t0 = time.perf_counter()
    chosen = idx["lshdb default"].tune(target_recall=0.9, n_queries=200)["chosen"] or {}
    tuned = {k: chosen[k] for k in ("probes", "min_hits", "candidates", "rerank", "scan")
             if chosen.get(k) is not None}
    notes.append(f"lshdb tuned: index.tune(target_recall=0.9) chose {tuned} in "
                 f"{time.perf_counter() - t0:.1f} s")
    readers = {label: index.reader() for label, index in idx.items()}
    handles = {label: cm.__enter__() for label, cm in readers.items()}
    try:
        for label, r in handles.items():
            systems[label] = lambda q, r=r: [k for k, _ in r.query(q, 10)]
        systems["lshdb tuned (0.9)"] = \
            lambda q, r=handles["lshdb default"]: [k for k, _ in r.query(q, 10, **tuned)]
        answers = {s: [f(q) for q in Q] for s, f in systems.items()}  # warm, and recall
        per_round: dict[str, list[float]] = {s: [] for s in systems}
        ratio: dict[str, list[float]] = {s: [] for s in systems}
        for rnd in range(rounds):
            med = {}
            for s, f in systems.items():
                med[s] = median([_time(f, q) for q in Q])
                per_round[s].append(med[s])
            for s in systems:
                ratio[s].append(med["numpy"] / med[s])
            print(f"  round {rnd + 1}: " + ", ".join(f"{s} {v * 1e6:.0f} us"
                                                     for s, v in med.items()), flush=True)
        flat = "faiss IndexFlatIP"
        rows = []
        for s in systems:
            rows.append({"system": s, "setting": peer_notes.get(s.replace(" (view)", ""), ""),
                         "recall@10": recall(answers[s], truth),
                         "p50 us": median(per_round[s]) * 1e6,
                         "q/s": 1.0 / median(per_round[s]),
                         "x numpy": median(ratio[s]),
                         "x faiss IndexFlatIP": median(
                             [a / b for a, b in zip(per_round[flat], per_round[s])]),
                         "build s": builds.get(s, builds.get(s.replace(" (view)", ""), ""))})
        batch_rows = []
        lb: list[float] = []
        nb: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            got = handles["lshdb default"].query_batch(Q, 10)
            lb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            exact(Xn, Qn)
            nb.append(time.perf_counter() - t0)
        batch_rows.append({"system": "lshdb default, query_batch",
                           "recall@10": recall([[k for k, _ in g] for g in got], truth),
                           "q/s": len(Q) / median(lb),
                           "x numpy batched": median([b / a for a, b in zip(lb, nb)])})
        batch_rows.append({"system": "numpy, one product per 256 queries", "recall@10": 1.0,
                           "q/s": len(Q) / median(nb), "x numpy batched": 1.0})
    finally:
        for cm in readers.values():
            cm.__exit__(None, None, None)
        for index in idx.values():
            index.close()
    return rows, batch_rows, notes


def _path_key(cal: dict[str, Any]) -> str:
    return f"codes{cal['codes']}" if cal.get("path") == "codes" else str(cal.get("path"))


def fixed_cost(rounds: int) -> list[dict[str, Any]]:
    """Reader.query and Index.query on a 2,000-row index (384-d) against numpy (the first
    set of benchmarks/query_cost.py)."""
    from benchmarks.query_cost import build, measure, scan_2k

    X, Q, options = scan_2k(300)
    work = tempfile.mkdtemp(prefix="lshdb-fixed-")
    try:
        index = build(os.path.join(work, "f"), X, options)
        try:
            return measure("2,000 x 384", X, Q, index, rounds)
        finally:
            index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="minilm,real-200k")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fixed", action="store_true", help="also the 2,000-row fixed cost")
    ap.add_argument("--out", default="embeddings", help="results/NAME.md to write")
    args = ap.parse_args()
    body = []
    for name in args.sets.split(","):
        data = load(name)
        if data is None:
            continue
        X, Q = data
        work = tempfile.mkdtemp(prefix=f"lshdb-emb-{name}-")
        try:
            rows, batch_rows, notes = run_set(name, X, Q[: args.queries], args.rounds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        body.append(f"### {name}: {len(X):,} x {X.shape[1]}, {min(len(Q), args.queries)} "
                    f"queries, {args.rounds} rounds\n\n{table(rows)}\n\nBatched:\n\n"
                    f"{table(batch_rows)}\n\n" + "\n".join(f"- {n}" for n in notes))
    if args.fixed:
        body.append("### Fixed cost: 2,000 x 384 random vectors, one query per call\n\n"
                    + table(fixed_cost(args.rounds * 2)))
    cmd = "python benchmarks/embeddings.py " + " ".join(sys.argv[1:])
    write_result(args.out, "Real sentence embeddings", "\n\n".join(body), cmd.strip())


if __name__ == "__main__":
    main()
