"""Near-duplicate detection benchmark: a text collection end to end, against exact pairs.

``lshdb.dedup.dedup_jsonl`` on the standard library corpora of ``build_corpora.py`` (by
default all three in one collection: 43,772 twenty-line chunks, 10,203 docstrings and 1,790
whole files; ``--corpus chunks`` for the chunks alone): read, shingle word 5-grams, sign,
band, verify exactly, cluster, write pairs and clusters, at thresholds 0.5, 0.7 and 0.8:
wall time (median of the repeats) with its phases, and recall and precision against the
exact all-pairs ground truth of ``exact_pairs.py``. At 0.8 also: estimate-only verification,
the datasketch-compatible ``classic`` signatures, and a datasketch ``MinHashLSH`` baseline
(same shingles fed as bytes, candidates verified exactly with Python sets) measured in the
same run.

usage: python benchmarks/dedup.py [--data ~/.cache/lshdb-bench/corpora] [--corpus all|chunks] [--repeats 3]
                                  [--no-baseline]
The corpus is built with ``build_corpora.py`` if missing (``--build-corpora`` or
``$LSHDB_BUILD_CORPORA``), the ground truth with ``exact_pairs.py`` (``--exact-pairs`` or
``$LSHDB_EXACT_PAIRS``); both default to ``../shared/data/`` beside the repo.
Writes benchmarks/results/dedup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import CACHE, SHARED, median, table, write_result  # noqa: E402
from lshdb.text.files import dedup_jsonl  # noqa: E402

PARTS = ("chunks", "docstrings", "files")  # the three corpora of build_corpora.py
N = 5


def ensure_inputs(data: str, build_script: str, exact_script: str,
                  which: str) -> tuple[str, str]:
    """The corpus (``chunks``, or ``all``: chunks, docstrings and files in one collection of
    ~56,000 documents) and its exact ground truth, built when missing."""
    parts = [os.path.join(data, f"stdlib_{p}.jsonl") for p in PARTS]
    if not all(os.path.exists(p) for p in parts):
        print(f"building corpora into {data}", flush=True)
        subprocess.run([sys.executable, build_script, data], check=True)
    corpus = os.path.join(data, f"stdlib_{which}.jsonl")
    if which == "all" and not os.path.exists(corpus):
        with open(corpus + ".tmp", "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    out.write(f.read())
        os.replace(corpus + ".tmp", corpus)
    truth = os.path.join(data, f"{which}_pairs_n{N}_t0.5.tsv")
    if not os.path.exists(truth):
        print("exact pairs (>= 0.5)", flush=True)
        subprocess.run([sys.executable, exact_script, corpus, truth, "0.5", str(N)], check=True)
    return corpus, truth


def load_truth(path: str) -> dict[tuple[str, str], float]:
    out = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            a, b, j = line.rstrip("\n").split("\t")
            out[(a, b)] = float(j)
    return out


def score(found: set[tuple[str, str]], truth: dict[tuple[str, str], float], threshold: float
          ) -> tuple[int, float, float]:
    # the ground truth is rounded to 6 decimals: compare at the threshold minus half a unit
    true = {p for p, j in truth.items() if j >= threshold - 5e-7}
    hit = len(found & true)
    return len(true), hit / max(len(true), 1), hit / max(len(found), 1)


def run_lshdb(corpus: str, workdir: str, repeats: int, **options: Any
              ) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = dedup_jsonl(corpus, pairs=os.path.join(workdir, "pairs.jsonl"),
                             clusters=os.path.join(workdir, "clusters.jsonl"), **options)
        times.append(time.perf_counter() - t0)
    return median(times), result


def datasketch_baseline(corpus: str, threshold: float) -> tuple[float, set[tuple[str, str]],
                                                                  int]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    keys, sets = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            w = o["text"].lower().split()
            s = ({" ".join(w[i:i + N]) for i in range(len(w) - N + 1)} if len(w) >= N
                 else set(w))
            keys.append(o["id"])
            sets.append(s)
    hashes = MinHash.bulk([[x.encode("utf-8") for x in s] for s in sets], num_perm=128)
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    with lsh.insertion_session() as session:
        for i, m in enumerate(hashes):
            if sets[i]:
                session.insert(i, m)
    found, candidates = set(), 0
    for i, m in enumerate(hashes):
        if not sets[i]:
            continue
        for j in lsh.query(m):
            if j > i:
                candidates += 1
                a, b = sets[i], sets[j]
                inter = len(a & b)
                if inter / (len(a) + len(b) - inter) >= threshold:
                    found.add((min(keys[i], keys[j]), max(keys[i], keys[j])))
    return time.perf_counter() - t0, found, candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(CACHE, "corpora"))
    ap.add_argument("--build-corpora", default=os.environ.get(
        "LSHDB_BUILD_CORPORA", os.path.join(SHARED, "data", "build_corpora.py")))
    ap.add_argument("--exact-pairs", default=os.environ.get(
        "LSHDB_EXACT_PAIRS", os.path.join(SHARED, "data", "exact_pairs.py")))
    ap.add_argument("--corpus", choices=("all", "chunks"), default="all",
                    help="all: chunks + docstrings + files (~56,000 documents)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    corpus, truth_path = ensure_inputs(args.data, args.build_corpora, args.exact_pairs,
                                       args.corpus)
    truth = load_truth(truth_path)
    runs = [(0.5, {}), (0.7, {}), (0.8, {}), (0.8, {"verify": "estimate"}),
            (0.8, {"mode": "classic"})]
    rows, phases = [], []
    with tempfile.TemporaryDirectory() as workdir:
        dedup_jsonl(corpus, threshold=0.8)  # warm-up
        for threshold, extra in runs:
            reps = 1 if extra.get("mode") == "classic" else args.repeats
            seconds, result = run_lshdb(corpus, workdir, reps, threshold=threshold, **extra)
            keys = result.keys
            found = {(min(keys[a], keys[b]), max(keys[a], keys[b]))
                     for a, b in zip(result.pair_a.tolist(), result.pair_b.tolist())}
            n_true, recall, precision = score(found, truth, threshold)
            st = result.stats
            label = "lshdb " + ", ".join([st["mode"], f"verify={st['verify']}"])
            print(f"[{threshold}] {label}: {seconds:.2f} s recall {recall:.4f} "
                  f"precision {precision:.4f}", flush=True)
            rows.append({"threshold": threshold, "system": label, "seconds": seconds,
                         "docs/s": st["documents"] / seconds, "bands x rows": f"{st['bands']}x{st['rows']}",
                         "candidates": st["candidate_pairs"], "pairs found": len(found),
                         "true pairs": n_true, "recall": recall, "precision": precision,
                         "clusters": st["clusters"]})
            phases.append({"threshold": threshold, "system": label, **st["seconds"]})
        if not args.no_baseline:
            seconds, found, candidates = datasketch_baseline(corpus, 0.8)
            n_true, recall, precision = score(found, truth, 0.8)
            print(f"[0.8] datasketch: {seconds:.2f} s recall {recall:.4f}", flush=True)
            rows.append({"threshold": 0.8, "system": "datasketch MinHashLSH + exact check",
                         "seconds": seconds, "docs/s": len(result.keys) / seconds,
                         "bands x rows": "datasketch default", "candidates": candidates,
                         "pairs found": len(found), "true pairs": n_true, "recall": recall,
                         "precision": precision, "clusters": ""})
    n_docs = len(result.keys)
    body = (f"Corpus: `{os.path.basename(corpus)}` ({n_docs:,} documents), word 5-gram "
            "shingles, 128 permutations, end to end: read the JSON lines, shingle, sign, band, "
            "verify, cluster, write the pairs and clusters files (median of the repeats; "
            "classic and datasketch once). Recall and precision against every pair at or above the "
            "threshold in the exact ground truth (`exact_pairs.py`).\n\n" + table(rows) +
            "\n\n### Seconds per phase (lshdb)\n\n" + table(phases))
    write_result("dedup", "Near-duplicate detection (similarity self-join)", body,
                 "python benchmarks/dedup.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
