"""Dedup on a real Dask LocalCluster (worker processes): the same pairs and clusters as the
single-process dedup, Parquet and JSON lines in and out, a worker killed with SIGKILL mid-run,
and matching against (and adding to) a persistent jaccard index."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import dask
import dask.dataframe as dd
import pandas as pd
import pytest

import lshdb
from lshdb.dask import dedup as dask_dedup
from lshdb.dask.outputs import DaskJobError, read_documents, write_dedup
from lshdb.errors import DuplicateKeyError
from lshdb.text.dedup import dedup


def corpus(seed: int, n: int = 240) -> tuple[list, list[str]]:
    """Random texts of 3-120 words, edited copies of some (a few copies of copies, so some
    clusters have more than two members and chains), two empty texts, shuffled."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(1500)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 120))) for _ in range(n)]
    for _ in range(n // 2):
        words = rng.choice(texts).split()
        for _ in range(rng.randint(0, 8)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    texts += ["", " \n "]
    rng.shuffle(texts)
    keys: list = list(range(len(texts))) if seed % 2 else [f"d{i}" for i in range(len(texts))]
    return keys, texts


def as_lists(result) -> tuple[list, list]:
    pairs = [(a, b, j) for a, b, j in result.pairs()]
    clusters = [[result.keys[i] for i in m.tolist()] for m in result.clusters]
    return pairs, clusters


@pytest.mark.parametrize("seed, options", [
    (0, dict(threshold=0.5)),
    (1, dict(threshold=0.8, verify="estimate", shingle="char:6")),
    (2, dict(threshold=0.7, mode="classic", num_perm=64, seed=3)),
])
def test_dask_dedup_equals_single_process(client, seed, options):
    keys, texts = corpus(seed)
    ref_pairs, ref_clusters = as_lists(dedup(keys, texts, **options))
    assert len(ref_pairs) >= 30 and max(map(len, ref_clusters)) >= 3
    frame = dd.from_pandas(pd.DataFrame({"id": keys, "text": texts}), npartitions=4)
    f = dask_dedup(frame, **options, bands_per_round=5)
    pairs, clusters, stats = dask.compute(f.pairs, f.clusters, f.stats)
    assert list(zip(pairs.a, pairs.b, pairs.jaccard)) == ref_pairs
    assert clusters["keys"].tolist() == ref_clusters
    assert clusters.cluster.tolist() == list(range(len(ref_clusters)))
    assert clusters["size"].tolist() == list(map(len, ref_clusters))
    single = dedup(keys, texts, **options).stats
    for name in ("candidate_pairs", "similar_pairs", "clusters", "empty_documents", "bands", "rows"):
        assert stats[name] == single[name], name


def test_member_lists_give_every_pair_once_on_its_first_documents_partition():
    import itertools

    import numpy as np

    from lshdb.dask.buckets import bucket_members, candidates

    def doc(p: int, row: int) -> int:
        return p << 32 | row

    # two bands, three partitions; one bucket spans all three (with two members in the
    # middle one), one sits in partition 2 alone, one key is a singleton
    buckets = {(0, 7): [doc(0, 1), doc(1, 4), doc(1, 9), doc(2, 0)],
               (1, 7): [doc(2, 3), doc(2, 5)], (1, 8): [doc(0, 2)],
               (1, 9): [doc(0, 1), doc(1, 4)]}  # a pair again in another band
    recs = sorted(((band, key, d) for (band, key), ds in buckets.items() for d in ds),
                  key=lambda r: (r[2], r[0]))  # document order, as the rounds send them
    lists = bucket_members(3, np.array(recs, dtype=np.uint64).T)
    got = [candidates(p, lists[p], 5) for p in range(3)]  # 5: a key check's count
    expected = sorted({pair for ds in buckets.values() for pair in itertools.combinations(ds, 2)})
    assert sorted(zip(*np.concatenate(got, axis=1).tolist())) == expected
    for p, c in enumerate(got):
        assert all(a >> 32 == p for a in c[0].tolist())
    # g ids, not pairs: partition 1 gets the big bucket's tail from its first member on,
    # partition 2 nothing of it (its member there is the last, and starts no pair)
    assert [x[0].tolist() for x in lists] == [[4, 2], [3], [2]]


def test_repeated_key_is_an_error(client):
    frame = dd.from_pandas(pd.DataFrame({"id": ["a", "c", "b", "a2", "c2", "b"],
                                         "text": ["x y z", "x y", "p q", "r s", "t", "u"]}),
                           npartitions=2)
    with pytest.raises(DuplicateKeyError, match="'b' .*partition 0 row 2 and partition 1 row 2"):
        dask.compute(dask_dedup(frame, threshold=0.5).pairs)


def write_inputs(tmp_path, keys, texts) -> list[str]:
    """The first half as JSON lines, the rest as two Parquet files (matched by a glob)."""
    half, three = len(keys) // 2, 3 * len(keys) // 4
    with open(tmp_path / "a.jsonl", "w") as f:
        for k, t in zip(keys[:half], texts[:half]):
            f.write(json.dumps({"key": k, "body": t}) + "\n")
    for name, lo, hi in (("b1", half, three), ("b2", three, len(keys))):
        pd.DataFrame({"key": keys[lo:hi], "body": texts[lo:hi]}).to_parquet(
            tmp_path / f"{name}.parquet")
    return [str(tmp_path / "a.jsonl"), str(tmp_path / "b*.parquet")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lshdb", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_parquet_and_json_lines_in_and_out(client, tmp_path):
    keys, texts = corpus(4)
    ref_pairs, ref_clusters = as_lists(dedup(keys, texts, threshold=0.6))
    inputs = write_inputs(tmp_path, keys, texts)
    out, clusters = tmp_path / "pairs.parquet", tmp_path / "clusters.jsonl"
    run = run_cli("dedup", *inputs, "--dask", client.scheduler.address, "--threshold", "0.6",
                  "--key-field", "key", "--text-field", "body", "--out", str(out),
                  "--clusters", str(clusters))
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(out))[0] == "part-00000.parquet"
    got = pd.read_parquet(out)
    assert list(zip(got.a, got.b, got.jaccard)) == ref_pairs
    lines = [json.loads(x) for x in clusters.read_text().splitlines()]
    assert [c["keys"] for c in lines] == ref_clusters
    assert [c["cluster"] for c in lines] == list(range(len(ref_clusters)))
    summary = json.loads(run.stderr.strip().splitlines()[-1])["summary"]
    assert summary["pairs_written"] == len(ref_pairs) and summary["documents"] == len(keys)
    # a folder that exists is not overwritten
    again = run_cli("dedup", *inputs, "--dask", client.scheduler.address, "--key-field", "key",
                    "--text-field", "body", "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_worker_killed_once_the_job_still_finishes(client, tmp_path):
    keys, texts = corpus(6)
    marker = str(tmp_path / "killed-once")

    def kill_first_time(part):
        if len(part) and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return part

    frame = dd.from_pandas(pd.DataFrame({"id": keys, "text": texts}), npartitions=4)
    frame = frame.map_partitions(kill_first_time, meta=frame._meta)
    stats = write_dedup(frame, pairs=str(tmp_path / "pairs.jsonl"),
                        clusters=f"{tmp_path}/clusters/", threshold=0.5)
    assert os.path.exists(marker)
    ref_pairs, ref_clusters = as_lists(dedup(keys, texts, threshold=0.5))
    got = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(g["a"], g["b"], g["jaccard"]) for g in got] == ref_pairs
    parts = sorted((tmp_path / "clusters").iterdir())
    got_clusters = [json.loads(x)["keys"] for p in parts for x in p.read_text().splitlines()]
    assert got_clusters == ref_clusters and stats["clusters_written"] == len(ref_clusters)


def test_worker_killed_every_time_fails_and_leaves_nothing(client, tmp_path):
    keys, texts = corpus(8, n=60)

    def always_kill(part):
        if len(part):
            os.kill(os.getpid(), signal.SIGKILL)
        return part

    frame = dd.from_pandas(pd.DataFrame({"id": keys, "text": texts}), npartitions=2)
    frame = frame.map_partitions(always_kill, meta=frame._meta)
    with pytest.raises(DaskJobError, match="nothing was written"):
        write_dedup(frame, pairs=str(tmp_path / "pairs.parquet"),
                    clusters=str(tmp_path / "clusters.jsonl"), threshold=0.5)
    assert os.listdir(tmp_path) == []  # no target, no temporary folder
    client.wait_for_workers(2, timeout=60)  # the nannies restart them for the next tests


def test_against_and_add_to_an_index(client, tmp_path):
    keys, texts = corpus(10, n=120)
    index = str(tmp_path / "month1.lshdb")
    old = len(keys) // 2
    with lshdb.create(index, metric="jaccard", threshold=0.6, store_tokens=True) as ix:
        ix.add(*zip(*[(k, t) for k, t in zip(keys[:old], texts[:old]) if t.split()]))
    inputs = write_inputs(tmp_path, keys[old:], texts[old:])
    single = run_cli("dedup", str(tmp_path / "a.jsonl"), "--against", index, "--threshold",
                     "0.6", "--key-field", "key", "--text-field", "body")
    assert single.returncode == 0, single.stderr
    run = run_cli("dedup", inputs[0], "--dask", client.scheduler.address, "--against", index,
                  "--add-to", index, "--threshold", "0.6", "--key-field", "key",
                  "--text-field", "body", "--out", str(tmp_path / "matches.jsonl"))
    assert run.returncode == 0, run.stderr
    matches = [json.loads(x) for x in (tmp_path / "matches.jsonl").read_text().splitlines()]
    assert matches == [json.loads(x) for x in single.stdout.splitlines()] and matches
    # the survivors: kept by the batch's own dedup and matching nothing in the index
    new_keys, new_texts = keys[old:old + len(keys[old:]) // 2], texts[old:old + len(keys[old:]) // 2]
    batch = dedup(new_keys, new_texts, threshold=0.6)
    kept = {k for k, keep in zip(new_keys, batch.kept("first")) if keep}
    survivors = kept - {m["a"] for m in matches} - {k for k, t in zip(new_keys, new_texts)
                                                     if not t.split()}
    with lshdb.open(index, readonly=True) as ix:
        before = sum(1 for t in texts[:old] if t.split())
        assert len(ix) == before + len(survivors)
        assert all(k in ix for k in survivors)
    summary = json.loads(run.stderr.strip().splitlines()[-1])["summary"]
    assert summary["documents_added"] == len(survivors) > 0


def test_read_documents_reports_bad_lines(client, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1, "text": "a b"}\n{"id": 2, "text": 7}\n')
    frame = read_documents([str(p)])
    with pytest.raises(lshdb.InputFormatError, match="bad.jsonl: line at byte 25: .* must be a string"):
        frame.compute()
    with pytest.raises(lshdb.InputFormatError, match="no file matches"):
        read_documents([str(tmp_path / "none*.jsonl")])


def test_without_dask_the_core_works_and_the_error_names_the_extra(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": 1, "text": "a b c"}\n')
    block = "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None; "
    code = (block + "import lshdb, lshdb.dask; from lshdb.cli.main import cli; "
            f"cli(['dedup', {str(tmp_path / 'd.jsonl')!r}, '--dask', 'local:1'])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "pip install 'lshdb[dask]'" in run.stderr and "Traceback" not in run.stderr
