"""Jaccard index benchmark: inserts and threshold queries, lshdb against in-memory peers.

The stdlib chunks corpus is signed once with lshdb's datasketch-compatible signatures
(mode="classic", num_perm=128, seed 1); the same signatures go into
* lshdb's persistent jaccard index (full durability, batches of 10,000 per commit),
* datasketch's MinHashLSH (in memory; MinHash objects built from the same hashvalues),
and rensa's in-memory RMinHashLSH gets rensa's own signatures of the same shingles. Each
gets the same threshold (0.8) and, for datasketch and lshdb, the same bands and rows.
Queries are 2,000 of the documents; lshdb is queried for every item with estimated
Jaccard >= 0.8 (filtered on the signatures, as a threshold query is meant) and for its raw
candidates (what the peers return). Bare LMDB storing one key per band and item, in the
same batches with the same durability, gives the floor of the posting layout itself.

usage: python benchmarks/jaccard_index.py [--threshold 0.8] [--queries 2000] [--repeats 3]
Writes benchmarks/results/jaccard_index.md.
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
from benchmarks.common import CACHE, SHARED, table, write_result  # noqa: E402
from benchmarks.minhash import ensure_corpora, load  # noqa: E402
from lshdb.hashing.minhash import band_keys, text_signatures  # noqa: E402
from lshdb.hashing.shingles import word_shingles  # noqa: E402


def lmdb_floor(bucket_keys: np.ndarray, batch: int, workdir: str) -> float:
    """Seconds for bare LMDB to store what the index's tables store for these items: one
    key (8-byte bucket, 4-byte suffix) per band and item with a one-id posting value, in
    the same batches, one named database per band, each batch one fsync-ed commit. No key
    map, rows, tails or band hashing: the storage engine's floor for the layout."""
    import lmdb

    path = os.path.join(workdir, "floor")
    env = lmdb.open(path, map_size=1 << 34, max_dbs=bucket_keys.shape[1] + 1, sync=True)
    try:
        dbs = [env.open_db(b"t%d" % t) for t in range(bucket_keys.shape[1])]
        value = b"\xc4\x04" + b"\0" * 4  # msgpack bin8 of one uint32 id
        key = np.dtype([("b", ">u8"), ("f", ">u4")])
        t0 = time.perf_counter()
        for s in range(0, len(bucket_keys), batch):
            with env.begin(write=True) as txn:
                for t, db in enumerate(dbs):
                    k = np.zeros(len(bucket_keys[s : s + batch]), dtype=key)
                    k["b"] = np.sort(bucket_keys[s : s + batch, t])
                    txn.cursor(db).putmulti([(x, value) for x in k.view("V12").tolist()])
        return time.perf_counter() - t0
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3, help="insert timings: the median")
    args = ap.parse_args()
    data = os.path.join(CACHE, "corpora")
    ensure_corpora(data, os.path.join(SHARED, "data", "build_corpora.py"))
    keys, texts, _ = load(os.path.join(data, "stdlib_chunks.jsonl"))
    keep = [i for i, t in enumerate(texts) if t.split()]
    keys = [keys[i] for i in keep]
    texts = [texts[i] for i in keep]
    n = len(texts)
    t0 = time.perf_counter()
    sigs = text_signatures(texts, "word:5", 128, mode="classic", seed=1)
    sign_s = time.perf_counter() - t0
    qidx = np.random.default_rng(0).choice(n, args.queries, replace=False)
    rows: list[dict[str, Any]] = []
    workdir = tempfile.mkdtemp(prefix="lshdb-jac-")
    try:
        path = os.path.join(workdir, "sets.lshdb")
        times = []
        for rep in range(args.repeats):  # each time a new index; the last one is queried
            shutil.rmtree(path, ignore_errors=True)
            index = lshdb.create(path, metric="jaccard", mode="classic", seed=1,
                                 threshold=args.threshold, num_perm=128)
            t0 = time.perf_counter()
            for s in range(0, n, args.batch):
                index.add(keys[s : s + args.batch], sigs[s : s + args.batch])
            times.append(time.perf_counter() - t0)
            if rep + 1 < args.repeats:
                index.close()
        ins = float(np.median(times))
        b, r = index.family.L, index.family.k
        lshdb_found = {}
        with index.reader() as rd:
            t0 = time.perf_counter()
            for i in qidx:
                lshdb_found[i] = {k for k, _ in rd.query(sigs[i], k=None, threshold=args.threshold,
                                                          exact=False)}
            q_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cands = {i: rd.candidates(sigs[i])[0] for i in qidx}
            c_s = time.perf_counter() - t0
        index.close()
        bkeys = band_keys(sigs, b, r, 1)
        floor_s = float(np.median([lmdb_floor(bkeys, args.batch, workdir)
                                   for _ in range(args.repeats)]))
        rows.append({"system": f"lshdb persistent (full durability, {args.batch:,}/commit)",
                     "bands x rows": f"{b} x {r}", "inserts/s": n / ins,
                     "threshold queries/s": len(qidx) / q_s,
                     "candidate queries/s": len(qidx) / c_s})
        from datasketch import MinHash, MinHashLSH

        objs = [MinHash(num_perm=128, seed=1, hashvalues=sigs[i], scheme="affine32") for i in range(n)]
        times = []
        for _ in range(args.repeats):
            lsh = MinHashLSH(threshold=args.threshold, num_perm=128)
            t0 = time.perf_counter()
            for k, m in zip(keys, objs):
                lsh.insert(k, m)
            times.append(time.perf_counter() - t0)
        ds_ins = float(np.median(times))
        t0 = time.perf_counter()
        ds_found = {i: set(lsh.query(objs[i])) for i in qidx}
        ds_q = time.perf_counter() - t0
        rows.append({"system": "datasketch MinHashLSH (in memory)",
                     "bands x rows": f"{lsh.b} x {lsh.r}", "inserts/s": n / ds_ins,
                     "threshold queries/s": float("nan"),
                     "candidate queries/s": len(qidx) / ds_q})
        same = float(np.mean([set(keys[j] for j in cands[i]) == ds_found[i] for i in qidx]))
        try:
            import rensa

            shingles = [sorted(word_shingles(t, 5)) for t in texts]
            rm = []
            for sh in shingles:
                m = rensa.RMinHash(num_perm=128, seed=1)
                m.update(sh)
                rm.append(m)
            rb = min((d for d in range(1, 129) if 128 % d == 0), key=lambda d: abs(d - b))
            rl = rensa.RMinHashLSH(threshold=args.threshold, num_perm=128, num_bands=rb)
            t0 = time.perf_counter()
            for i, m in enumerate(rm):
                rl.insert(i, m)
            r_ins = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in qidx:
                rl.query(rm[i])
            r_q = time.perf_counter() - t0
            rows.append({"system": "rensa RMinHashLSH (in memory, its own signatures)",
                         "bands x rows": f"{rb} x {128 // rb} (bands must divide 128)",
                         "inserts/s": n / r_ins,
                         "threshold queries/s": float("nan"),
                         "candidate queries/s": len(qidx) / r_q})
        except ImportError:
            pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [{"ratio": "lshdb inserts / datasketch inserts",
               "value": rows[0]["inserts/s"] / rows[1]["inserts/s"]},
              {"ratio": "bare LMDB floor of the layout / datasketch inserts (no lshdb code: "
                        f"{b} puts per item, same batches and durability)",
               "value": n / floor_s / rows[1]["inserts/s"]},
              {"ratio": "lshdb candidate queries / datasketch queries",
               "value": rows[0]["candidate queries/s"] / rows[1]["candidate queries/s"]},
              {"ratio": "queries whose candidates equal datasketch's", "value": same}]
    if len(rows) > 2:
        ratios.append({"ratio": "lshdb inserts / rensa inserts",
                       "value": rows[0]["inserts/s"] / rows[2]["inserts/s"]})
    body = (f"{n:,} stdlib chunks, word 5-grams, num_perm 128, threshold {args.threshold}; "
            f"signing took {sign_s:.2f} s (not counted below); {len(qidx):,} queries; inserts "
            f"are the median of {args.repeats} runs, each into a new index.\n\n"
            + table(rows) + "\n\n" + table(ratios))
    write_result("jaccard_index", "Jaccard index: inserts and queries against in-memory LSH",
                 body, "python benchmarks/jaccard_index.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
