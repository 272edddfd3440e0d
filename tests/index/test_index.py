"""The Python API against a real LMDB on tmp_path, with brute force as the oracle."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lshdb
from lshdb import check
from lshdb.io.datasets import exact_knn


def recall(index, X, Q, metric, **kw):
    truth = exact_knn(X, Q, 10, metric)
    got = index.query_batch(Q, k=10, **kw)
    return np.mean([len({k for k, _ in g} & set(truth[i].tolist())) / 10 for i, g in enumerate(got)])


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_exhaustive_parameters_give_exact_results(path, data, metric):
    X, Q = data
    # one function per table: every bucket is visited with enough probes, so LSH is exact
    with lshdb.create(path, metric=metric, dim=32, k=1, L=2, w=1e6) if metric != "cosine" else \
            lshdb.create(path, metric=metric, dim=32, k=1, L=2) as index:
        index.add(range(len(X)), X)
        assert recall(index, X, Q, metric, probes=4) == 1.0
        # distances are exact: compare with numpy for one query
        q = Q[0]
        hits = index.query(q, k=5, probes=4)
        if metric == "cosine":
            Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
            d = 1 - Xn @ (q / np.linalg.norm(q))
        elif metric == "l2":
            d = np.linalg.norm(X - q, axis=1)
        else:
            d = np.abs(X - q).sum(1)
        order = np.argsort(d)[:5]
        assert [k for k, _ in hits] == order.tolist()
        np.testing.assert_allclose([dist for _, dist in hits], d[order], rtol=1e-4, atol=1e-5)


def test_default_parameters_reach_recall(path, data):
    X, Q = data
    with lshdb.create(path, metric="l2", dim=32) as index:
        index.add(range(len(X)), X)
        assert recall(index, X, Q, "l2") >= 0.9


def test_add_get_len_contains_and_reopen(path, data):
    X, _ = data
    keys = [f"doc-{i}" for i in range(100)]
    with lshdb.create(path, metric="l2", dim=32, k=4, L=4, w=4.0) as index:
        with index.writer() as w:
            w.add(keys[:60], X[:60])
            w.add(keys[60:], X[60:100])
        assert len(index) == 100
        assert "doc-5" in index and "doc-500" not in index and 5 not in index
        np.testing.assert_array_equal(index.get("doc-7"), X[7])
    with lshdb.open(path, readonly=True) as index:
        assert len(index) == 100
        np.testing.assert_array_equal(index.get("doc-99"), X[99])
        assert index.query(X[42], k=1)[0] == ("doc-42", 0.0)
        assert index.keys() == keys


def test_int_str_and_bytes_keys_coexist(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=100.0) as index:
        index.add([1, "1", b"1", -5, 2**64 - 1, np.int64(7)], X[:6])
        for i, key in enumerate([1, "1", b"1", -5, 2**64 - 1, 7]):
            np.testing.assert_array_equal(index.get(key), X[i])
        assert {k for k, _ in index.query(X[0], k=6, probes=8)} == {1, "1", b"1", -5, 2**64 - 1, 7}


def test_cosine_stores_unit_vectors(path, data):
    X, _ = data
    with lshdb.create(path, metric="cosine", dim=32) as index:
        index.add([0], X[:1] * 10)
        np.testing.assert_allclose(np.linalg.norm(index.get(0)), 1.0, rtol=1e-6)
        (key, dist), = index.query(X[0], k=1)
        assert key == 0 and abs(dist) < 1e-6
        # a norm past float32's range (squares summed in float64) still normalises
        huge = np.zeros((1, 32), np.float32)
        huge[0, :2] = 3e38
        index.add([1], huge)
        np.testing.assert_allclose(index.get(1)[:2], [2**-0.5, 2**-0.5], rtol=1e-6)


def test_exception_inside_writer_commits_nothing(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=10.0) as index:
        index.add(range(10), X[:10])
        with pytest.raises(RuntimeError):
            with index.writer() as w:
                w.add(range(10, 20), X[10:20])
                w.delete([0, 1])
                raise RuntimeError("boom")
        assert len(index) == 10 and 0 in index and 15 not in index
        assert index.stats()["rows"] == 10
        # the next writer overwrites the abandoned rows
        index.add(range(10, 20), X[20:30])
        np.testing.assert_array_equal(index.get(12), X[22])
    report = check(path)
    assert report["ok"], report["problems"]


def test_delete_and_upsert(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=3, L=3, w=8.0) as index:
        index.add(range(200), X[:200])
        assert index.delete([3, 4]) == 2
        assert len(index) == 198 and 3 not in index
        assert all(k not in (3, 4) for k, _ in index.query(X[3], k=50, probes=30))
        index.upsert([5, 1000], X[300:302])
        assert len(index) == 199
        np.testing.assert_array_equal(index.get(5), X[300])
        assert index.query(X[300], k=1)[0] == (5, 0.0)
        assert index.delete([3, 77], missing_ok=True) == 1
        report = check(path)
        assert report["ok"], report["problems"]


def test_query_batch_matches_single_queries(path, data):
    X, Q = data
    with lshdb.create(path, metric="cosine", dim=32, k=6, L=6) as index:
        index.add(range(len(X)), X)
        batch = index.query_batch(Q[:10], k=5, probes=12)
        single = [index.query(q, k=5, probes=12) for q in Q[:10]]
        assert batch == single


def test_reader_is_a_snapshot(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=10.0) as index:
        index.add(range(10), X[:10])
        with index.reader() as r:
            index.add(range(10, 20), X[10:20])
            assert len(r) == 10 and 15 not in r
        assert len(index) == 20


def test_stats_reports_parts_and_buckets(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=4, L=3, w=6.0) as index:
        index.add(range(len(X)), X)
        st = index.stats()
    assert st["live"] == len(X) and st["rows"] == len(X)
    assert st["family"]["k"] == 4 and st["family"]["L"] == 3 and st["family"]["w"] == 6.0
    assert len(st["tables"]) == 3 and all(t["ids"] == len(X) for t in st["tables"])
    # the bytes on disk, not the size the row file has grown to ahead of its rows
    assert len(X) * 32 * 4 <= st["bytes"]["rows"] < 2 * len(X) * (32 * 4 + 8) + (64 << 10)
    assert st["bytes"]["postings"] > 0 and st["bytes"]["key_maps"] > 0


def test_parameters_survive_reopen(path, data):
    X, Q = data
    with lshdb.create(path, metric="l2", dim=32, k=5, L=4, seed=3) as index:
        index.add(range(len(X)), X)
        before = index.query_batch(Q[:5], k=5)
        fam = index.family
    with lshdb.open(path) as index:
        assert index.family.describe() == fam.describe()
        np.testing.assert_array_equal(index.family.A, fam.A)
        assert index.query_batch(Q[:5], k=5) == before


def test_index_layout_on_disk(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=10.0) as index:
        index.add(range(10), X[:10])
    assert open(os.path.join(path, "CURRENT")).read() == "g000001\n"
    assert sorted(os.listdir(os.path.join(path, "g000001"))) == ["data.mdb", "lock.mdb", "rows.bin"]


def test_a_bulk_write_is_flushed_early_and_the_commit_still_waits_for_it(path, monkeypatch):
    # rows before postings: the background flush of a large write only starts the disk
    # early; the commit joins it and flushes again on its own thread before LMDB commits
    import threading
    import time

    import lshdb.storage.rows

    events: list[str] = []
    real = os.fdatasync

    def recorder(fd: int) -> None:
        name = threading.current_thread().name
        events.append(f"{name} start")
        if name == "lshdb-rows-flush":
            time.sleep(0.3)
        real(fd)
        events.append(f"{name} end")

    monkeypatch.setattr(lshdb.storage.rows, "_EARLY_FLUSH", 1 << 16)
    X = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)  # 280 kB
    with lshdb.create(path, metric="cosine", dim=32, k=4, L=2) as index:
        monkeypatch.setattr(os, "fdatasync", recorder)
        index.add(range(2000), X)
        monkeypatch.setattr(os, "fdatasync", real)
        assert index.query(X[5], k=1)[0][0] == 5
    assert events[:2] == ["lshdb-rows-flush start", "lshdb-rows-flush end"]
    assert "MainThread start" in events[2:]  # the commit's own flush, after the early one
    assert not any(t.name == "lshdb-rows-flush" for t in threading.enumerate())
