"""The calibration's choice of path (buckets, hash codes, exact scan) on real indexes.

The choice itself depends on costs measured on the machine; these tests fix the cost
table (``lshdb.paths.costs``) where they need one path to win, and check what follows from
the choice: the codes a default index starts, their size, answers against brute force,
other handles, rolled-back blocks and compaction.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import lshdb
from lshdb import paths
from lshdb.datasets import clustered, exact_knn


def _table(scan: float, code: float) -> dict:
    return {"scan_row_us": scan, "rerank_us": 0.2,
            "codes": {b: {"row_us": code * b / 256, "query_us": 5.0} for b in paths.CODE_BITS}}


@pytest.fixture
def codes_win(monkeypatch):
    monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0: _table(1.0, 0.001))


@pytest.fixture(scope="module")
def far():
    rng = np.random.default_rng(3)
    X = clustered(3000, 48, seed=5, cluster_size=300, n_queries=30)[0]
    X = X + 0.3 * rng.standard_normal(X.shape).astype(np.float32)  # loose clusters
    Q = X[:30] + 0.1 * rng.standard_normal((30, 48)).astype(np.float32)
    return X, Q


def _recall(index, X, Q, metric="cosine"):
    truth = exact_knn(X, Q, 10, metric)
    got = [index.query(q, k=10) for q in Q]
    return float(np.mean([len({k for k, _ in g} & set(t.tolist())) / 10
                          for g, t in zip(got, truth)]))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_default_index_starts_the_codes_its_calibration_chooses(tmp_path, far, codes_win,
                                                                    metric):
    X, Q = far
    path = str(tmp_path / "ix")
    with lshdb.create(path, metric=metric, dim=48) as index:
        index.add(range(500), X[:500])  # below calibration: no codes yet
        assert index.coder is None and not os.path.exists(f"{path}/g000001/codes.bin")
        index.add(range(500, 3000), X[500:])
        cal = index.stats(buckets=False)["calibration"]
        assert cal["path"] == "codes" and cal["codes"] in paths.CODE_BITS
        assert index.coder is not None and index.coder.bits == cal["codes"]
        assert index.settings["scan"] is True and index.settings["rerank"] == \
            cal["paths"][f"codes{cal['codes']}"]["rerank"]
        assert {"buckets", "scan"} <= set(cal["paths"]) and cal["live_rows"] == 3000
        assert _recall(index, X, Q, metric) >= 0.9
    with lshdb.open(path, readonly=True) as index:  # reopened: the codes are there
        assert index.coder is not None and _recall(index, X, Q, metric) >= 0.9
        assert lshdb.check.check(path)["ok"]


def test_other_handles_pick_up_codes_started_elsewhere(tmp_path, far, codes_win):
    X, Q = far
    path = str(tmp_path / "ix")
    lshdb.create(path, metric="cosine", dim=48).close()
    with lshdb.open(path) as a, lshdb.open(path) as b:
        b.add(range(100), X[:100])
        a.add(range(100, 3000), X[100:])  # a calibrates and starts codes
        assert a.coder is not None and b.coder is None
        with b.reader() as r:  # b's next snapshot reloads the generation's files
            assert r._coder is not None
        b.add(range(3000, 3010), Q[:10])  # and b's writes give their rows codes
        for j in range(10):
            assert b.query(Q[j], k=1)[0][0] == 3000 + j
        assert lshdb.check.check(path)["ok"]


def test_a_rolled_back_block_leaves_no_codes(tmp_path, far, codes_win):
    X, Q = far
    path = str(tmp_path / "ix")
    with lshdb.create(path, metric="cosine", dim=48) as index:
        with open(f"{path}/g000001/codes.bin", "wb") as f:
            f.write(b"left by a crashed writer")
        with pytest.raises(RuntimeError):
            with index.writer() as w:
                w.add(range(3000), X)
                assert index.coder is None and index._codes is not None  # begun, not committed
                raise RuntimeError("roll back")
        assert index._codes is None and index.coder is None and len(index) == 0
        assert not os.path.exists(f"{path}/g000001/codes.bin")
        with open(f"{path}/g000001/codes.bin", "wb") as f:
            f.write(b"left by a crashed writer")
        index.add(range(3000), X)  # the leftover is replaced
        assert index.coder is not None and _recall(index, X, Q) >= 0.9
    assert lshdb.check.check(path)["ok"]


def test_compaction_retunes_the_codes(tmp_path, far, monkeypatch):
    X, Q = far
    path = str(tmp_path / "ix")
    monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0: _table(1.0, 0.001))
    with lshdb.create(path, metric="cosine", dim=48) as index:
        index.add(range(3000), X)
        assert index.coder is not None
        monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0: _table(1e-4, 10.0))
        index.compact(retune=True)  # scans are cheap now: the codes go
        cal = index.stats(buckets=False)["calibration"]
        assert cal["path"] == "scan" and index.coder is None and index.settings["scan"]
        assert not os.path.exists(f"{path}/{index.generation}/codes.bin")
        assert _recall(index, X, Q) == 1.0
        monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0: _table(1.0, 0.001))
        index.compact(retune=True)  # and come back
        assert index.coder is not None and _recall(index, X, Q) >= 0.9
    assert lshdb.check.check(path)["ok"]


def test_the_writer_retunes_as_the_index_grows_and_shrinks(tmp_path, far):
    X, Q = far
    rng = np.random.default_rng(8)
    Y = np.concatenate([X, X + 0.05 * rng.standard_normal(X.shape).astype(np.float32)])
    path = str(tmp_path / "ix")
    with lshdb.create(path, metric="cosine", dim=48) as index:
        index.add(range(1000), Y[:1000])
        cal = index.stats(buckets=False)["calibration"]
        assert cal["live_rows"] == 1000 and index.generation == "g000001"
        for s in range(1000, 3900, 300):  # 3,999 rows: not yet four times as many
            index.add(range(s, min(s + 300, 3999)), Y[s : min(s + 300, 3999)])
        assert index.generation == "g000001"
        index.add([3999], Y[3999:4000])  # four times: the writer retunes, in a compaction
        cal = index.stats(buckets=False)["calibration"]
        assert index.generation == "g000002" and cal["live_rows"] == 4000
        assert "T" in cal["calibrated_at"] and len(index) == 4000
        assert _recall(index, Y[:4000], Q) >= 0.9
        index.delete(range(3000))  # a quarter left: retuned again
        cal = index.stats(buckets=False)["calibration"]
        assert index.generation == "g000003" and cal["live_rows"] == 1000
        keys = [k for k, _ in index.query(Y[3500], k=3)]
        assert keys[0] == 3500
    assert lshdb.check.check(path)["ok"]


def test_retuning_on_growth_can_be_turned_off(tmp_path, far, monkeypatch):
    X, _ = far
    monkeypatch.setattr(lshdb.Index, "retune_on_growth", False)
    with lshdb.create(str(tmp_path / "ix"), metric="cosine", dim=48) as index:
        index.add(range(1000), X[:1000])
        index.add(range(1000, 3000), X[1000:3000])
        index.add(range(3000, 4000), np.flip(X[:1000], axis=1).copy())
        assert index.generation == "g000001"
        assert index.stats(buckets=False)["calibration"]["live_rows"] == 1000


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_batched_code_scans_answer_as_single_queries(tmp_path, far, codes_win, metric):
    X, Q = far
    with lshdb.create(str(tmp_path / "ix"), metric=metric, dim=48) as index:
        index.add(range(3000), X)
        assert index.coder is not None
        for k, rerank in ((10, None), (3, 40), (50, 20)):
            batch = index.query_batch(Q, k=k, rerank=rerank)
            single = [index.query(q, k=k, rerank=rerank) for q in Q]
            assert [[key for key, _ in g] for g in batch] == [[key for key, _ in g] for g in single]
            np.testing.assert_allclose([d for g in batch for _, d in g],
                                       [d for g in single for _, d in g], rtol=1e-5, atol=1e-6)
        index.delete(range(0, 3000, 2))  # with deleted rows too
        batch = index.query_batch(Q, k=10)
        assert [[key for key, _ in g] for g in batch] == \
            [[key for key, _ in index.query(q, k=10)] for q in Q]
        assert all(key % 2 for g in batch for key, _ in g)
