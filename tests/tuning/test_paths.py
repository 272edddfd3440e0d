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
from lshdb.io.datasets import clustered, exact_knn
from lshdb.tuning import paths


def _table(scan: float, code: float) -> dict:
    return {"scan_row_us": scan, "rerank_us": 0.2,
            "codes": {b: {"row_us": code * b / 256, "query_us": 5.0} for b in paths.CODE_BITS}}


@pytest.fixture
def codes_win(monkeypatch):
    monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0, timing=None: _table(1.0, 0.001))


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
        assert lshdb.check(path)["ok"]


def test_a_chosen_rerank_grows_with_the_index_until_it_retunes(tmp_path, codes_win):
    X, Q = clustered(24000, 128, seed=3, n_queries=100)
    truth = exact_knn(X, Q, 10, "cosine")

    def recall(r, **kw):
        return float(np.mean([len({k for k, _ in r.query(q, k=10, **kw)} & set(t.tolist())) / 10
                              for q, t in zip(Q, truth)]))

    with lshdb.create(str(tmp_path / "ix"), metric="cosine", dim=128) as index:
        index.add(range(8000), X[:8000])  # calibrates for 8,000 rows
        R = index.settings["rerank"]
        assert index.settings["scan"] is True and index.settings["rerank_for"] == [R, 8000]
        index.add(range(8000, 24000), X[8000:])  # 3x: below the 4x that retunes
        assert index.settings["rerank_for"] == [R, 8000]
        with index.reader() as r:
            grown, fixed = recall(r), recall(r, rerank=R)
        assert grown >= 0.95 and grown > fixed  # the stored R alone no longer finds them
        index.set_query_defaults(rerank=R + 1)  # a count set by hand is taken as it is
        with index.reader() as r:
            assert recall(r) == recall(r, rerank=R + 1)


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
        assert lshdb.check(path)["ok"]


def test_a_rolled_back_block_leaves_no_codes(tmp_path, far, codes_win):
    X, Q = far
    path = str(tmp_path / "ix")
    with lshdb.create(path, metric="cosine", dim=48) as index:
        with open(f"{path}/g000001/codes.bin", "wb") as f:
            f.write(b"left by a crashed writer")
        with pytest.raises(RuntimeError):
            with index.writer() as w:
                w.add(range(3000), X)
                assert index.coder is None  # begun, not committed
                assert index.files().codes is not None
                raise RuntimeError("roll back")
        assert index.files().codes is None and index.coder is None and len(index) == 0
        assert not os.path.exists(f"{path}/g000001/codes.bin")
        with open(f"{path}/g000001/codes.bin", "wb") as f:
            f.write(b"left by a crashed writer")
        index.add(range(3000), X)  # the leftover is replaced
        assert index.coder is not None and _recall(index, X, Q) >= 0.9
    assert lshdb.check(path)["ok"]


def test_compaction_retunes_the_codes(tmp_path, far, monkeypatch):
    X, Q = far
    path = str(tmp_path / "ix")
    monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0, timing=None: _table(1.0, 0.001))
    with lshdb.create(path, metric="cosine", dim=48) as index:
        index.add(range(3000), X)
        assert index.coder is not None
        monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0, timing=None: _table(1e-4, 10.0))
        index.compact(retune=True)  # scans are cheap now: the codes go
        cal = index.stats(buckets=False)["calibration"]
        assert cal["path"] == "scan" and index.coder is None and index.settings["scan"]
        assert not os.path.exists(f"{path}/{index.generation}/codes.bin")
        assert _recall(index, X, Q) == 1.0
        monkeypatch.setattr(paths, "costs", lambda dim, itemsize=4, n=0, timing=None: _table(1.0, 0.001))
        index.compact(retune=True)  # and come back
        assert index.coder is not None and _recall(index, X, Q) >= 0.9
    assert lshdb.check(path)["ok"]


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
    assert lshdb.check(path)["ok"]


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


def _format(index) -> int:
    from lshdb.storage.codec import unpack_meta

    with index.reader() as r:
        return int(unpack_meta(r._txn.get(b"format", db=r._store.db(b"meta")),
                               "format")["format_version"])


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_float16_rows(tmp_path, far, metric):
    X, Q = far
    X, Q = X * 3.0, Q * 3.0  # values away from 1, for l2 and l1
    path = str(tmp_path / "h")
    with lshdb.create(path, metric=metric, dim=48, dtype="float16") as index:
        assert _format(index) == 3  # older lshdb would misread the rows: refused there
        index.add(range(3000), X)
        got = index.get(7)
        assert got.dtype == np.float16
        stored = index.metric.prepare(X[7:8])[0].astype(np.float16)
        np.testing.assert_array_equal(got, stored)
        assert index._rows.row_bytes == 48 * 2 + 8  # half the payload of float32 rows
        truth = exact_knn(X, Q, 10, metric)
        for scan in (True, False):
            got = index.query_batch(Q, k=10, scan=scan)
            rec = np.mean([len({k for k, _ in g} & set(t.tolist())) / 10
                           for g, t in zip(got, truth)])
            assert rec >= (0.97 if scan and index.coder is None else 0.85), scan
            assert all(isinstance(d, float) for g in got for _, d in g)
        r0 = index.query(Q[0], k=1, scan=True)[0]  # distances in float32, from the rows
        rows = index.metric.prepare_items(X)[0]
        d = index.metric.distances(rows[[r0[0]]], index.metric.prepare_one(Q[0]))[0]
        assert abs(r0[1] - float(d)) <= 1e-3 * max(1.0, abs(float(d)))
        index.delete(range(0, 3000, 3))
        index.compact()
    assert lshdb.check(path)["ok"]
    with lshdb.open(path, readonly=True) as index:
        assert index.metric.row_dtype == np.float16 and len(index) == 2000


def test_float16_refuses_values_out_of_range_and_other_metrics(tmp_path):
    with lshdb.create(str(tmp_path / "h"), metric="l2", dim=4, dtype="float16") as index:
        with pytest.raises(lshdb.InvalidVectorError, match="row 1 .*float16"):
            index.add([1, 2], np.array([[1, 2, 3, 4], [1e5, 0, 0, 0]], dtype=np.float32))
        assert len(index) == 0
    for metric, dim in (("hamming", 16), ("jaccard", None)):
        with pytest.raises(lshdb.InvalidParameterError, match="dtype"):
            lshdb.create(str(tmp_path / metric), metric=metric, dim=dim, dtype="float16")
    with pytest.raises(lshdb.InvalidParameterError, match="dtype"):
        lshdb.create(str(tmp_path / "x"), metric="cosine", dim=4, dtype="int8")


def test_older_formats_still_open(tmp_path, far, codes_win):
    X, Q = far
    with lshdb.create(str(tmp_path / "plain"), metric="cosine", dim=48, codes=0) as index:
        index.add(range(3000), X)
        assert _format(index) == 2  # nothing new in it: an older lshdb reads it too
    with lshdb.create(str(tmp_path / "auto"), metric="cosine", dim=48) as index:
        index.add(range(3000), X)
        assert index.coder is not None and _format(index) == 3
        index.compact(retune=True)
        assert index.coder is not None and _format(index) == 3


def test_cli_dtype_and_stats_show_the_calibration(tmp_path, far):
    import json

    from click.testing import CliRunner

    from lshdb.cli.main import cli

    X, _ = far
    path = str(tmp_path / "c")
    runner = CliRunner()
    res = runner.invoke(cli, ["create", path, "--metric", "cosine", "--dim", "48",
                              "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    with lshdb.open(path) as index:
        assert index.metric.row_dtype == np.float16
        index.add(range(2000), X[:2000])
    res = runner.invoke(cli, ["stats", path, "--no-buckets", "--format", "json"])
    assert res.exit_code == 0, res.output
    cal = json.loads(res.output.splitlines()[0])["calibration"]
    assert cal["live_rows"] == 2000 and cal["calibrated_at"].endswith("Z")
    assert cal["path"] in ("buckets", "scan", "codes") and "scan" in cal["paths"]
    res = runner.invoke(cli, ["create", str(tmp_path / "d"), "--metric", "hamming",
                              "--dim", "16", "--dtype", "float16"])
    assert res.exit_code == 1 and "Error:" in res.output and "dtype" in res.output


def test_a_failed_retune_warns_and_keeps_the_committed_rows(tmp_path, far, monkeypatch):
    X, _ = far

    def fail(self, timeout=None, retune=False, progress=None):
        raise lshdb.LockTimeoutError("another writer held the lock")

    with lshdb.create(str(tmp_path / "ix"), metric="cosine", dim=48) as index:
        index.add(range(1000), X[:1000])
        monkeypatch.setattr(lshdb.Index, "compact", fail)
        with pytest.warns(UserWarning, match="retuning for 4000 live rows failed"):
            index.add(range(1000, 4000), np.concatenate([X[1000:], X[:1000] * -1.0]))
        assert len(index) == 4000 and index.generation == "g000001"
