"""Recent runs (lshdb.runs): the format, the two-level look-up against brute force, and the
index's use of them on a real LMDB: small batches wait in runs, the next one past RUN_MAX
merges them, deletes edit them, checks and queries see them, damage is detected."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib

import lmdb
import numpy as np
import pytest

import lshdb
from lshdb import check
from lshdb.io.datasets import clustered
from lshdb.storage import runs
from lshdb.storage.codec import pack_meta, unpack_meta

PARAMS = {"metric": "cosine", "dim": 16, "k": 6, "L": 4, "seed": 3}
N = 1500


def vectors(n: int = N + 3000) -> np.ndarray:
    return clustered(n, 16, seed=11)[0]


def brute(tables, buckets, ids, pt, pb) -> np.ndarray:
    out = [ids[(tables == t) & (buckets == b)] for t, b in zip(pt.tolist(), pb.tolist())]
    return np.sort(np.concatenate(out)) if out else np.empty(0)


def run_set(*runs_) -> runs.RunSet:
    rs = runs.RunSet()
    for i, run in enumerate(runs_):
        rs = rs.extended(b"run-%d" % i, run)
    return rs


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 500, 5000])
@pytest.mark.parametrize("distinct", [8, 1 << 40])
def test_lookup_equals_brute_force(n, distinct):
    rng = np.random.default_rng([n, distinct])
    tables = rng.integers(0, 5, n)
    buckets = rng.integers(0, distinct, n).astype(np.uint64)
    buckets[: n // 7] = np.uint64(2**64 - 1)
    ids = rng.permutation(10 * n + 1)[:n]
    run = runs.decode_run(runs.encode_run(tables, buckets, ids))
    assert len(run) == n
    other = runs.decode_run(runs.encode_run(tables[:3], buckets[:3], ids[:3] + 7))
    pt = np.concatenate([tables[:20], rng.integers(0, 5, 20), [0, 4]])
    pb = np.concatenate([buckets[:20], rng.integers(0, distinct, 20).astype(np.uint64),
                         np.array([2**64 - 1, 0], dtype=np.uint64)])
    want = brute(tables, buckets, ids, pt, pb)
    want3 = brute(tables[:3], buckets[:3], ids[:3] + 7, pt, pb)
    np.testing.assert_array_equal(np.sort(run_set(run).lookup(pt, pb)), want)
    np.testing.assert_array_equal(np.sort(run_set(run, other, run).lookup(pt, pb)),
                                  np.sort(np.concatenate([want, want3, want])))
    for t in range(5):
        b, i = run.table(t)
        assert sorted(zip(b.tolist(), i.tolist())) == \
            sorted(zip(buckets[tables == t].tolist(), ids[tables == t].tolist()))


def test_each_merged_set_holds_exactly_its_runs():
    rng = np.random.default_rng(5)
    made = []
    for i in range(12):
        n = int(rng.integers(1, 400))
        made.append((rng.integers(0, 3, n), rng.integers(0, 50, n).astype(np.uint64),
                     np.arange(1000 * i, 1000 * i + n)))
    sets = [runs.RunSet()]
    for i, (t, b, ids) in enumerate(made):
        sets.append(sets[-1].extended(b"r%d" % i, runs.decode_run(runs.encode_run(t, b, ids))))
    pt, pb = np.array([0, 1, 2, 0]), np.array([3, 3, 7, 49], dtype=np.uint64)
    for k, rs in enumerate(sets):  # merging made new sets: the older ones are unchanged
        want = [brute(t, b, ids, pt, pb) for t, b, ids in made[:k]]
        assert rs.names == [b"r%d" % i for i in range(k)]
        np.testing.assert_array_equal(np.sort(rs.lookup(pt, pb)),
                                      np.sort(np.concatenate(want)) if want else [])


def test_the_cache_serves_each_snapshot_its_own_runs(built):
    X = vectors()
    with lshdb.open(built) as index, contextlib.ExitStack() as held:
        def add(b: int) -> None:  # from another thread: this one holds snapshots
            t = threading.Thread(target=index.add, args=(range(N + 10 * b, N + 10 * b + 10),
                                                        X[N + 10 * b : N + 10 * b + 10]))
            t.start()
            t.join()

        old = held.enter_context(index.reader())  # a snapshot taken before any run
        seen = []
        for b in range(3):
            add(b)
            seen.append(held.enter_context(index.reader()))
            assert_finds_itself(index, X, [N + 10 * b])
        # each held snapshot answers from its own runs, whatever the cache holds now
        for b, r in enumerate(seen):
            got = {k for k, _ in r.query(X[N + 20], k=3)}
            assert (N + 20 in got) == (b == 2)
        assert N + 5 not in {k for k, _ in old.query(X[N + 5], k=3)}


def test_entries_with_an_equal_derived_key_are_told_apart(monkeypatch):
    # every derived key equal: only the table and the bucket may decide
    monkeypatch.setattr(runs, "derived_keys", lambda t, b: np.zeros(len(t), dtype=np.uint64))
    run = runs.Run(np.array([5, 5, 6, 7], dtype=np.uint64),
                   np.array([1, 2, 3, 4], dtype=np.uint32), np.array([0, 1, 1, 1]))
    rs = run_set(run)
    assert sorted(rs.lookup(np.array([1]), np.array([5], dtype=np.uint64)).tolist()) == [2]
    assert sorted(rs.lookup(np.array([1, 0]), np.array([6, 5], dtype=np.uint64))) == [1, 3]


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "order"])
def test_damaged_run_is_refused(damage):
    value = bytearray(runs.encode_run(np.array([0, 1, 2]), np.array([3, 9, 27], dtype=np.uint64),
                                      np.array([4, 5, 6])))
    if damage == "truncate":
        value = value[:-3]
    elif damage == "flip":
        value[-9] ^= 0x10
    elif damage == "magic":
        value[0] ^= 1
    else:  # well formed with a good checksum, but in descending key order
        buckets = np.array([3, 9, 27], dtype=np.uint64)
        tables = np.zeros(3, dtype=np.int64)
        order = np.argsort(runs.derived_keys(tables, buckets))[::-1]
        body = b"".join((buckets[order].astype("<u8").tobytes(),
                         np.array([4, 5, 6], dtype="<u4").tobytes(),
                         tables.astype("<u2").tobytes()))
        value = bytearray(value[:8] + struct.pack("<II", 3, zlib.crc32(body)) + body)
    with pytest.raises(lshdb.CorruptIndexError):
        runs.decode_run(bytes(value))


# -- in an index ---------------------------------------------------------------------


@pytest.fixture
def built(path):
    with lshdb.create(path, **PARAMS) as index:
        index.add(range(N), vectors()[:N])
    return path


def state(index) -> dict:
    with index.reader() as r:
        return dict(r.state)


def run_names(index) -> list[bytes]:
    with index.reader() as r:
        c = r.txn.cursor(r.store.db(b"meta"))
        return [bytes(k) for k in c.iternext(values=False) if k.startswith(runs.PREFIX)]


def assert_finds_itself(index, X, keys) -> None:
    for key in keys:
        (got, dist), *_ = index.query(X[key], k=1)
        assert dist < 1e-5 and np.allclose(X[got], X[key], atol=1e-6)


def test_small_batches_wait_in_runs_and_are_found(built):
    X = vectors()
    with lshdb.open(built) as index:
        for b in range(3):
            index.add(range(N + 10 * b, N + 10 * b + 10), X[N + 10 * b : N + 10 * b + 10])
        assert state(index)["runs"] == 3 == index.stats(buckets=False)["runs"]
        assert_finds_itself(index, X, [N, N + 15, N + 29])
        assert len(index) == N + 30
        assert run_names(index) == [runs.run_key(i) for i in range(3)]
    report = check(built)
    assert report["ok"] and report["counts"]["runs"] == 3


def test_the_batch_past_run_max_merges_every_run(built):
    X = vectors()
    nxt = N
    with lshdb.open(built) as index:
        for _ in range(runs.RUN_MAX):
            index.add(range(nxt, nxt + 5), X[nxt : nxt + 5])
            nxt += 5
        assert state(index)["runs"] == runs.RUN_MAX
        names_before = run_names(index)
        index.add(range(nxt, nxt + 5), X[nxt : nxt + 5])
        nxt += 5
        assert "runs" not in state(index) and run_names(index) == []
        assert_finds_itself(index, X, [N, N + 7, nxt - 1])
        index.add(range(nxt, nxt + 5), X[nxt : nxt + 5])  # a new run: a new name
        assert run_names(index)[0] not in names_before
        assert state(index)["run_seq"] == runs.RUN_MAX + 1
    assert check(built)["ok"]


def test_stats_count_the_chunks_a_probe_reads_per_bucket(built):
    X = vectors()
    with lshdb.open(built) as index:
        assert index.stats()["chunks_per_bucket"] == 1.0  # bulk loaded: one chunk each
        nxt = N
        for _ in range(runs.RUN_MAX + 1):  # the last batch merges the runs into the tables
            index.add(range(nxt, nxt + 200), X[nxt : nxt + 200])
            nxt += 200
        st = index.stats()
        tables = st["tables"]
        grown = sum(t["chunks"] for t in tables) / sum(t["buckets"] for t in tables)
        assert st["chunks_per_bucket"] == grown and grown > 1.5  # most buckets gained a tail
        index.compact()
        assert index.stats()["chunks_per_bucket"] == 1.0


def test_a_large_batch_goes_to_the_tables_with_the_waiting_runs(built):
    X = vectors()
    big = runs.DIRECT_PAIRS // PARAMS["L"]  # pairs == DIRECT_PAIRS: direct
    X2 = clustered(big, 16, seed=12)[0]
    with lshdb.open(built) as index:
        index.add(range(N, N + 10), X[N : N + 10])
        assert state(index)["runs"] == 1
        index.add(range(10**6, 10**6 + big), X2)
        assert "runs" not in state(index)
        assert_finds_itself(index, X, [N + 3])
    assert check(built)["ok"]


def test_deletes_edit_the_runs_and_the_tables(built):
    X = vectors()
    with lshdb.open(built) as index:
        index.add(range(N, N + 20), X[N : N + 20])
        index.add(range(N + 20, N + 40), X[N + 20 : N + 40])
        names = run_names(index)
        index.delete([N + 1, N + 25, 7])  # two held by runs, one by the tables
        after = run_names(index)
        assert len(after) == 2 and not set(after) & set(names)  # both replaced, new names
        index.delete([k for k in range(N + 20, N + 40) if k != N + 25])  # the rest of run 2
        assert len(run_names(index)) == 1 and state(index)["runs"] == 1
        gone = {N + 1, N + 25, 7, *range(N + 20, N + 40)}
        for key in gone:
            assert all(k not in gone for k, _ in index.query(X[key], k=5))
        assert_finds_itself(index, X, [N, N + 19, 8])
        index.upsert([N + 2], X[N + 3 : N + 4])  # upsert of a key in a run
        (got, dist), *_ = index.query(X[N + 3], k=1)
        assert dist < 1e-5
    assert check(built)["ok"]


def test_check_finds_a_damaged_run_and_a_wrong_run_count(built):
    X = vectors()
    with lshdb.open(built) as index:
        index.add(range(N, N + 10), X[N : N + 10])
    gen = os.path.join(built, "g000001")
    env = lmdb.open(gen, max_dbs=8)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(runs.run_key(0), db=meta))
            value[40] ^= 0x01
            txn.put(runs.run_key(0), bytes(value), db=meta)
    finally:
        env.close()
    report = check(built)
    assert not report["ok"] and any("damaged" in p for p in report["problems"])
    with lshdb.open(built, readonly=True) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="damaged"):
            index.query(X[N], k=1)
    env = lmdb.open(gen, max_dbs=8)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.delete(runs.run_key(0), db=meta)
    finally:
        env.close()
    report = check(built)
    assert any("counts 1 runs but 0 are stored" in p for p in report["problems"])


def test_a_format_1_index_opens_and_is_marked_format_2_by_its_first_run(built):
    gen = os.path.join(built, "g000001")
    env = lmdb.open(gen, max_dbs=8)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"format", pack_meta({"format_version": 1}), db=meta)
    finally:
        env.close()
    X = vectors()

    def version() -> int:  # read from the file itself, with the index closed
        env = lmdb.open(gen, readonly=True, max_dbs=8)
        try:
            with env.begin() as txn:
                raw = txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False))
                return int(unpack_meta(raw, "format")["format_version"])
        finally:
            env.close()

    with lshdb.open(built) as index:
        assert_finds_itself(index, X, [0, 99])
        index.delete([5])  # no run: stays format 1 (older lshdb can still read it)
    assert version() == 1
    with lshdb.open(built) as index:
        index.add(range(N, N + 10), X[N : N + 10])
    assert version() == 2  # runs need format 2 (format 3: float16 rows or chosen codes)
    assert check(built)["ok"]
