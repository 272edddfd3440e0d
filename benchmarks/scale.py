"""Past one machine: dedup of a >= 1M-document corpus on Dask, and a sharded vector index.

The corpus (seeded, cached in ``~/.cache/lshdb-bench/``): each base document joins 4-10
random distinct lines of real text found on this machine (the Python standard library's
sources, the package descriptions of the dpkg database, the documentation under
``/usr/share/doc``); 10% more documents are planted near-duplicates, each an edited copy
of a base document whose exact word-5-gram Jaccard similarity to it is recorded.

Dedup (threshold 0.8, word 5-grams, 128 permutations, exact verification), interleaved
repeats, each run in a fresh process: ``lshdb dedup`` single-process, and on a Dask
LocalCluster of 1 and 2 worker processes (``local:1``, ``local:2``), all reading the same
JSON-lines file and writing pairs and clusters; wall time (cluster start excluded, reported
apart), the peak RSS of the process and of every worker, recall against the planted pairs
at or above 0.8 and precision (the exact Jaccard of a sample of the pairs found, recomputed
with Python sets). datasketch ``MinHashLSH`` + exact check and rensa ``RMinHashLSH`` + exact
check run single-process on the first ``--baseline-docs`` documents (with lshdb on the same
subset for the ratio), as they would take hours on the whole corpus.

Vectors: a seeded Gaussian mixture of ``--vectors`` x 64 (cached): ``lshdb build`` single
against ``lshdb build --shards 2 --dask local:2``, and recall@10 / queries per second of
the single index against the fan-out over the shards, both against brute force.

usage: flock /tmp/lshdb-bench.lock python benchmarks/scale.py [--docs 1000000]
           [--repeats 3] [--baseline-docs 50000] [--vectors 1000000] [--part all|dedup|shards]
Writes benchmarks/results/scale.md (scale_dedup.md, scale_shards.md for one part).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import CACHE, ROOT, median, table, write_result  # noqa: E402

THRESHOLD = 0.8
N = 5


# -- the corpus ----------------------------------------------------------------------------


def _real_lines() -> list[str]:
    """Distinct lines of real text (3+ words) found on this machine, in a fixed order."""
    lines: set[str] = set()
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"),
                                 recursive=True)):
        try:
            with open(path, encoding="utf-8") as f:
                lines.update(x.strip() for x in f)
        except (UnicodeDecodeError, OSError):
            continue
    try:
        with open("/var/lib/dpkg/status", encoding="utf-8", errors="replace") as f:
            lines.update(x.strip() for x in f if x.startswith(" "))
    except OSError:
        pass
    for path in sorted(glob.glob("/usr/share/doc/**/*", recursive=True))[:20000]:
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                    lines.update(x.strip() for x in f)
            elif os.path.isfile(path) and os.path.getsize(path) < 1 << 20:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines.update(x.strip() for x in f)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
    return sorted(x for x in lines if len(x.split()) >= 3)


def _shingles(text: str) -> set[str]:
    w = text.lower().split()
    return {" ".join(w[i:i + N]) for i in range(len(w) - N + 1)} if len(w) >= N else set(w)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def ensure_corpus(n_docs: int, seed: int = 0) -> tuple[str, str]:
    """(corpus.jsonl, planted.tsv): n_docs documents, 1/11 of them planted copies."""
    os.makedirs(CACHE, exist_ok=True)
    corpus = os.path.join(CACHE, f"scale_{n_docs}_s{seed}.jsonl")
    planted = os.path.join(CACHE, f"scale_{n_docs}_s{seed}_planted.tsv")
    if os.path.exists(corpus) and os.path.exists(planted):
        return corpus, planted
    t0 = time.perf_counter()
    lines = _real_lines()
    print(f"corpus: {len(lines)} distinct real lines", flush=True)
    rng = random.Random(seed)
    n_copies = n_docs // 11
    n_base = n_docs - n_copies
    texts = [" ".join(rng.sample(lines, rng.randint(4, 10))) for _ in range(n_base)]
    vocab = [w for x in rng.sample(lines, 20000) for w in x.split()]
    pairs = []
    for c in range(n_copies):
        src = rng.randrange(n_base)
        words = texts[src].split()
        edits = rng.choice([0, 0, 1, 1, 2, 3, 4, 6, 8, 12])  # a spread of similarities
        for _ in range(edits):
            op = rng.random()
            i = rng.randrange(len(words))
            if op < 0.6:
                words[i] = rng.choice(vocab)
            elif op < 0.8:
                words.insert(i, rng.choice(vocab))
            elif len(words) > N + 1:
                del words[i]
        copy = " ".join(words)
        texts.append(copy)
        pairs.append((src, n_base + c, _jaccard(_shingles(texts[src]), _shingles(copy))))
    order = list(range(n_docs))
    rng.shuffle(order)  # copies spread through the file, not at its end
    where = {doc: pos for pos, doc in enumerate(order)}
    with open(corpus + ".tmp", "w", encoding="utf-8") as f:
        for doc in order:
            f.write(json.dumps({"id": f"d{where[doc]}", "text": texts[doc]}) + "\n")
    with open(planted + ".tmp", "w") as f:
        for a, b, j in pairs:
            x, y = sorted((where[a], where[b]))
            f.write(f"d{x}\td{y}\t{j:.6f}\n")
    os.replace(corpus + ".tmp", corpus)
    os.replace(planted + ".tmp", planted)
    print(f"corpus: {n_docs} documents in {time.perf_counter() - t0:.0f} s", flush=True)
    return corpus, planted


def first_docs(corpus: str, n: int) -> str:
    """The first n documents of the corpus, as their own file (cached)."""
    path = corpus.replace(".jsonl", f"_first{n}.jsonl")
    if not os.path.exists(path):
        with open(corpus, encoding="utf-8") as f, open(path + ".tmp", "w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                if i >= n:
                    break
                out.write(line)
        os.replace(path + ".tmp", path)
    return path


# -- one measured run (in its own process) -------------------------------------------------


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across
    exec from the process that started it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(system: str, corpus: str, out: str) -> dict[str, Any]:
    """Dedup ``corpus`` with one system, writing found pairs to ``out`` as a TSV."""
    if system == "single":
        from lshdb.text.files import dedup_jsonl

        t0 = time.perf_counter()
        r = dedup_jsonl(corpus, pairs=out + ".jsonl", clusters=out + ".clusters.jsonl",
                        threshold=THRESHOLD)
        seconds = time.perf_counter() - t0
        _pairs_tsv(out + ".jsonl", out)
        return {"seconds": seconds, "peak_mb": _peak_mb(), "pairs": r.stats["similar_pairs"],
                "candidates": r.stats["candidate_pairs"], "bands": r.stats["bands"]}
    if system.startswith("local:"):
        from distributed import Client

        from lshdb.dask.client import local_cluster
        from lshdb.dask.jobs import block_bytes
        from lshdb.dask.outputs import read_documents, write_dedup

        n = int(system.split(":")[1])
        t0 = time.perf_counter()
        with local_cluster(n) as cluster, Client(cluster) as client:
            start = time.perf_counter() - t0
            t0 = time.perf_counter()
            frame = read_documents([corpus], blocksize=block_bytes([corpus], n))
            stats = write_dedup(frame, pairs=out + ".jsonl", clusters=out + ".clusters.jsonl",
                                threshold=THRESHOLD)
            seconds = time.perf_counter() - t0
            workers = client.run(_peak_mb)
        _pairs_tsv(out + ".jsonl", out)
        return {"seconds": seconds, "cluster_start": start, "peak_mb": _peak_mb(),
                "worker_peak_mb": sorted(workers.values()), "pairs": stats["similar_pairs"],
                "candidates": stats["candidate_pairs"], "bands": stats["bands"],
                "partitions": stats["partitions"], "live": stats["documents"] - stats["empty_documents"]}
    if system in ("datasketch", "rensa"):
        return _baseline(system, corpus, out)
    raise SystemExit(f"unknown system {system}")


def _pairs_tsv(jsonl: str, out: str) -> None:
    with open(jsonl, encoding="utf-8") as f, open(out, "w") as o:
        for line in f:
            p = json.loads(line)
            o.write(f"{p['a']}\t{p['b']}\t{p['jaccard']}\n")


def _baseline(system: str, corpus: str, out: str) -> dict[str, Any]:
    """MinHashLSH (datasketch, or rensa's) at 0.8 with 128 permutations, every candidate
    checked exactly with Python sets, as one would write it."""
    t0 = time.perf_counter()
    keys, sets = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            keys.append(o["id"])
            sets.append(_shingles(o["text"]))
    if system == "datasketch":
        from datasketch import MinHash, MinHashLSH

        sigs = MinHash.bulk([[x.encode("utf-8") for x in s] for s in sets], num_perm=128)
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
        with lsh.insertion_session() as session:
            for i, m in enumerate(sigs):
                if sets[i]:
                    session.insert(i, m)
    else:
        import rensa

        sigs = []
        for s in sets:
            m = rensa.RMinHash(num_perm=128, seed=1)
            m.update(sorted(s))
            sigs.append(m)
        lsh = rensa.RMinHashLSH(threshold=THRESHOLD, num_perm=128, num_bands=16)
        for i, m in enumerate(sigs):
            if sets[i]:
                lsh.insert(i, m)
    found, candidates = [], 0
    for i, m in enumerate(sigs):
        if not sets[i]:
            continue
        for j in lsh.query(m):
            if j > i:
                candidates += 1
                j_ = _jaccard(sets[i], sets[j])
                if j_ >= THRESHOLD:
                    found.append((keys[i], keys[j], j_))
    seconds = time.perf_counter() - t0
    with open(out, "w") as o:
        for a, b, j in found:
            o.write(f"{a}\t{b}\t{j}\n")
    return {"seconds": seconds, "peak_mb": _peak_mb(), "pairs": len(found),
            "candidates": candidates}


# -- scoring -------------------------------------------------------------------------------


def _key_num(k: str) -> int:
    return int(k[1:])


def score(found_tsv: str, planted: str, corpus_docs: int | None, texts: dict[str, str] | None,
          sample: int = 20000) -> dict[str, Any]:
    found = set()
    with open(found_tsv) as f:
        for line in f:
            a, b, _ = line.split("\t")
            found.add(tuple(sorted((a, b), key=_key_num)))
    truth = set()
    with open(planted) as f:
        for line in f:
            a, b, j = line.split("\t")
            if float(j) >= THRESHOLD and (corpus_docs is None or
                                          max(_key_num(a), _key_num(b)) < corpus_docs):
                truth.add((a, b))
    out: dict[str, Any] = {"planted_0.8": len(truth),
                           "recall_planted": len(found & truth) / max(len(truth), 1)}
    if texts is not None and found:
        rng = random.Random(0)
        pick = rng.sample(sorted(found), min(sample, len(found)))
        ok = sum(_jaccard(_shingles(texts[a]), _shingles(texts[b])) >= THRESHOLD for a, b in pick)
        out["precision"] = ok / len(pick)
    out["found"] = len(found)
    return out


def _load_texts(corpus: str) -> dict[str, str]:
    texts = {}
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            texts[o["id"]] = o["text"]
    return texts


def subprocess_run(system: str, corpus: str, out: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--run", system, "--corpus", corpus,
           "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode:
        raise SystemExit(f"{system} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the dedup part ------------------------------------------------------------------------


def dedup_part(args: argparse.Namespace, work: str) -> tuple[str, dict[str, Any]]:
    corpus, planted = ensure_corpus(args.docs)
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "local:1": [], "local:2": []}
    for rep in range(args.repeats):  # interleaved: the machine's load hits all alike
        for system in runs:
            r = subprocess_run(system, corpus, os.path.join(work, f"{system}-{rep}.tsv"))
            runs[system].append(r)
            print(f"[{rep}] {system}: {r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB "
                  f"workers {r.get('worker_peak_mb')}", flush=True)
    texts = _load_texts(corpus)
    rows, summary = [], {}
    for system, rs in runs.items():
        sc = score(os.path.join(work, f"{system}-0.tsv"), planted, None, texts)
        secs = [r["seconds"] for r in rs]
        summary[system] = median(secs)
        rows.append({"system": system if system != "single" else "lshdb dedup (one process)",
                     "docs": args.docs, "seconds (median)": median(secs),
                     "runs": " / ".join(f"{s:.1f}" for s in secs),
                     "cluster start s": (f"{median([r['cluster_start'] for r in rs]):.1f}"
                                         if "cluster_start" in rs[0] else ""),
                     "peak MB (client)": median([r["peak_mb"] for r in rs]),
                     "peak MB per worker": " / ".join(f"{m:.0f}" for m in
                                                      rs[0].get("worker_peak_mb", [])),
                     "pairs": rs[0]["pairs"], "candidates": rs[0]["candidates"],
                     "recall (planted >= 0.8)": sc["recall_planted"],
                     "precision": sc.get("precision")})
    same = all(open(os.path.join(work, f"{s}-0.tsv")).read() ==
               open(os.path.join(work, "single-0.tsv")).read() for s in ("local:1", "local:2"))
    # the references, on the first documents only (they would take hours on all)
    sub = first_docs(corpus, args.baseline_docs)
    base_rows = []
    for system in ("single", "datasketch", "rensa"):
        r = subprocess_run(system, sub, os.path.join(work, f"sub-{system}.tsv"))
        sc = score(os.path.join(work, f"sub-{system}.tsv"), planted, None, None)
        base_rows.append({"system": system if system != "single" else "lshdb dedup (one process)",
                          "docs": args.baseline_docs, "seconds": r["seconds"],
                          "us per doc": 1e6 * r["seconds"] / args.baseline_docs,
                          "peak MB": r["peak_mb"], "pairs": r["pairs"],
                          "candidates": r["candidates"]})
        summary[f"sub-{system}"] = r["seconds"]
        print(f"[subset] {system}: {r['seconds']:.1f} s", flush=True)
    ds_per_doc = summary["sub-datasketch"] / args.baseline_docs
    lo = runs["local:2"][0]
    shuffle_bytes = 24 * lo["bands"] * lo["live"] + 16 * 2 * lo["candidates"]
    summary.update(local2_vs_local1=summary["local:1"] / summary["local:2"],
                   local1_vs_single=summary["single"] / summary["local:1"],
                   local2_vs_datasketch=ds_per_doc * args.docs / summary["local:2"],
                   identical=same, shuffle_bytes=shuffle_bytes,
                   worker_s_per_doc=2 * summary["local:2"] / args.docs,
                   single_s_per_doc=summary["single"] / args.docs,
                   worker_peak=max(m for r in runs["local:2"] for m in r["worker_peak_mb"]))
    body = (f"Corpus: {args.docs:,} documents ({os.path.getsize(corpus) / 2**20:.0f} MB of "
            f"JSON lines), threshold {THRESHOLD}, word {N}-grams, 128 permutations, exact "
            f"verification; {args.repeats} interleaved runs, each in a fresh process.\n\n"
            + table(rows) + "\n\n"
            f"Pairs of `local:1` and `local:2` identical to the single process's: {same}.\n\n"
            f"References single-process on the first {args.baseline_docs:,} documents:\n\n"
            + table(base_rows) + "\n\n"
            f"Ratios: local:2 / local:1 {summary['local2_vs_local1']:.2f}x, local:1 / single "
            f"{summary['local1_vs_single']:.2f}x, local:2 against datasketch (its per-document "
            f"time on the subset times {args.docs:,}) {summary['local2_vs_datasketch']:.1f}x.\n"
            f"Shuffled per run: ~{shuffle_bytes / 2**20:.0f} MB of band records and bucket "
            f"member lists (24 bytes a record, {lo['bands']} bands), plus the shingle hashes "
            "of the candidates' documents.\n")
    return body, summary


# -- the vectors part ----------------------------------------------------------------------


def ensure_vectors(n: int, dim: int = 64, seed: int = 0) -> tuple[str, str]:
    """A seeded Gaussian mixture (``lshdb.io.datasets.clustered``, 2,000 points a cluster, so
    that the first 65,536 rows a build calibrates on hold each cluster's neighbours) and
    300 held-out queries, cached."""
    from lshdb.io.datasets import clustered

    os.makedirs(CACHE, exist_ok=True)
    x_path = os.path.join(CACHE, f"scale_clustered_{n}x{dim}_s{seed}.npy")
    q_path = x_path.replace(".npy", "_queries.npy")
    if not os.path.exists(x_path):
        X, Q = clustered(n, dim, seed=seed, cluster_size=2000, n_queries=300)
        np.save(x_path + ".tmp.npy", X)
        np.save(q_path + ".tmp.npy", Q)
        os.replace(x_path + ".tmp.npy", x_path)
        os.replace(q_path + ".tmp.npy", q_path)
    return x_path, q_path


def _sharded_in_process(path: str, x_path: str) -> float:
    """``build_sharded`` on a LocalCluster of 2 already running: the build without the
    cluster's start."""
    from distributed import Client

    from lshdb.dask.client import local_cluster
    from lshdb.dask.shards import build_sharded

    with local_cluster(2) as cluster, Client(cluster) as client:
        client.run(lambda: None)
        t0 = time.perf_counter()
        build_sharded(path, x_path, "cosine", 2, client)
        return time.perf_counter() - t0


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lshdb", *args], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": ROOT})
    return time.perf_counter() - t0


def _plan(ix: Any) -> str:
    """The query plan of an index (of a sharded one: its first shard's, which all share)."""
    one = ix.shards[0] if hasattr(ix, "shards") else ix
    cal = one.stats(buckets=False).get("calibration") or {}
    st, fam = one.settings, one.family.describe() if one.family else {}
    path = cal.get("path", "scan" if st.get("scan") else "buckets")
    plan = f"{path}, k={fam.get('k')}, probes={st.get('probes')}"
    if path == "codes":
        plan += f", {cal.get('codes')}-bit codes, rerank={st.get('rerank')}"
    return plan + f" (for {cal.get('live_rows', 0):,} rows)"


def shards_part(args: argparse.Namespace, work: str) -> tuple[str, dict[str, Any]]:
    import lshdb

    x_path, q_path = ensure_vectors(args.vectors)
    X, Q = np.load(x_path, mmap_mode="r"), np.load(q_path)
    Xn = np.asarray(X) / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    truth = np.argsort(-(Qn @ Xn.T), axis=1)[:, :10]
    del Xn
    builds: dict[str, list[float]] = {"single": [], "shards 2 on local:2": [],
                                      "the same, cluster up": []}
    for rep in range(args.build_repeats):
        for name in builds:
            path = os.path.join(work, f"{name.split()[0]}-{rep}.lshdb")
            if name == "the same, cluster up":
                builds[name].append(_sharded_in_process(path, x_path))
            else:
                extra = [] if name == "single" else ["--shards", "2", "--dask", "local:2"]
                builds[name].append(_cli("build", path, "--input", x_path, "--metric",
                                         "cosine", *extra))
            print(f"[{rep}] build {name}: {builds[name][-1]:.1f} s", flush=True)
            if rep and name == "the same, cluster up":
                shutil.rmtree(path, ignore_errors=True)
    rows, summary = [], {}
    for name in builds:
        if name == "the same, cluster up":
            summary[name] = {"build": median(builds[name])}
            rows.append({"index": name, "vectors": len(X),
                         "build s (median, with start-up)": median(builds[name]),
                         "runs": " / ".join(f"{s:.1f}" for s in builds[name])})
            continue
        path = os.path.join(work, f"{name.split()[0]}-0.lshdb")
        with lshdb.open(path, readonly=True) as ix:
            ix.query_batch(Q[:20], 10)
            t0 = time.perf_counter()
            res = ix.query_batch(Q, 10)
            qs = len(Q) / (time.perf_counter() - t0)
            plan = _plan(ix)
        rec = float(np.mean([len({k for k, _ in r} & set(t.tolist())) / 10
                             for r, t in zip(res, truth)]))
        summary[name] = {"build": median(builds[name]), "recall": rec, "qps": qs}
        rows.append({"index": name, "vectors": len(X), "build s (median, with start-up)":
                     median(builds[name]),
                     "runs": " / ".join(f"{s:.1f}" for s in builds[name]),
                     "recall@10": rec, "queries/s (query_batch)": qs, "query plan": plan})
    summary["build_speedup"] = summary["single"]["build"] / summary["shards 2 on local:2"]["build"]
    summary["build_speedup_cluster_up"] = (summary["single"]["build"]
                                           / summary["the same, cluster up"]["build"])
    summary["recall_gap"] = summary["single"]["recall"] - summary["shards 2 on local:2"]["recall"]
    body = (f"{len(X):,} x {X.shape[1]} float32 (a seeded Gaussian mixture, 2,000 points a "
            "cluster), cosine, "
            f"`lshdb build` against `lshdb build --shards 2 --dask local:2` (wall time of the "
            f"command, cluster start included), {len(Q)} queries against brute force.\n\n"
            + table(rows) + "\n\n"
            f"Build speed-up {summary['build_speedup']:.2f}x as commands, "
            f"{summary['build_speedup_cluster_up']:.2f}x with the cluster already up "
            "(`build_sharded` in Python); recall@10 of the fan-out minus the "
            f"single index's: {-summary['recall_gap']:+.4f}.\n")
    return body, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-docs", type=int, default=50_000)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--build-repeats", type=int, default=3)
    ap.add_argument("--part", choices=["all", "dedup", "shards"], default="all")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.corpus, args.out)))
        return
    work = tempfile.mkdtemp(prefix="lshdb-scale-")
    try:
        parts, summaries = [], {}
        if args.part in ("all", "dedup"):
            body, summaries["dedup"] = dedup_part(args, work)
            parts.append("## Dedup\n\n" + body)
        if args.part in ("all", "shards"):
            body, summaries["shards"] = shards_part(args, work)
            parts.append("## Sharded vector index\n\n" + body)
        print(json.dumps(summaries, indent=1, default=str))
        cmd = " ".join(["flock /tmp/lshdb-bench.lock python benchmarks/scale.py", *sys.argv[1:]])
        name = "scale" if args.part == "all" else f"scale_{args.part}"
        write_result(name, "Past one machine: dedup on Dask and sharded indexes",
                     "\n\n".join(parts), cmd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
