"""Bad input gets a clear LshdbError subclass and leaves the index unchanged."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile

import numpy as np
import pytest

import lshdb
from lshdb import check
from lshdb.storage.codec import pack_meta


@pytest.fixture
def index(path, data):
    X, _ = data
    ix = lshdb.create(path, metric="cosine", dim=32, k=4, L=3)
    ix.add(range(100), X[:100])
    yield ix
    ix.close()


def unchanged(index, path):
    assert len(index) == 100
    st = index.stats(buckets=False)
    assert st["rows"] == 100
    report = check(path)
    assert report["ok"], report["problems"]


@pytest.mark.parametrize("vectors, error, words", [
    (np.zeros((2, 31), np.float32), lshdb.DimensionMismatchError, "dimension 31"),
    (np.zeros((2, 32), np.complex64), lshdb.InvalidVectorError, "numeric"),
    (np.zeros(32, np.float32), lshdb.InvalidVectorError, "2-D"),
    (np.zeros((2, 2, 32), np.float32), lshdb.InvalidVectorError, "2-D"),
    (np.full((2, 32), np.nan, np.float32), lshdb.InvalidVectorError, "NaN"),
    (np.full((2, 32), np.inf, np.float32), lshdb.InvalidVectorError, "NaN or inf"),
    (np.zeros((0, 32), np.float32), lshdb.InvalidVectorError, "empty"),
    (np.zeros((2, 32), np.float32), lshdb.InvalidVectorError, "zero vector"),
    ([[1.0] * 32, [1.0] * 31], lshdb.InvalidVectorError, "ragged"),
    (np.array([["a"] * 32] * 2), lshdb.InvalidVectorError, "numeric"),
])
def test_bad_vectors(index, path, vectors, error, words):
    with pytest.raises(error, match=words):
        index.add([f"new{i}" for i in range(len(vectors))], vectors)
    unchanged(index, path)


def test_errors_are_builtin_subclasses_too(index):
    with pytest.raises(ValueError):
        index.add(["a"], np.zeros((1, 31)))
    with pytest.raises(KeyError):
        index.get("missing")


def test_duplicate_keys_in_batch(index, path, data):
    X, _ = data
    with pytest.raises(lshdb.DuplicateKeyError, match="'x' appears more than once"):
        index.add(["x", "y", "x"], X[:3])
    unchanged(index, path)


def test_adding_an_existing_key_points_to_upsert(index, path, data):
    X, _ = data
    with pytest.raises(lshdb.KeyExistsError, match="upsert"):
        index.add([500, 7], X[:2])
    unchanged(index, path)


def test_missing_keys(index, path):
    with pytest.raises(lshdb.KeyNotFoundError, match="not in the index"):
        index.get(12345)
    with pytest.raises(lshdb.KeyNotFoundError, match="nothing was deleted"):
        index.delete([1, 12345])
    unchanged(index, path)


def test_bad_keys(index, path, data):
    X, _ = data
    for bad in ([1.5, 2], [True, 3], [None, 4], [2**70, 5], ["x" * 1000, 6]):
        with pytest.raises(lshdb.InvalidKeyError):
            index.add(bad, X[:2])
    with pytest.raises(lshdb.InvalidParameterError, match="one key per row"):
        index.add([1, 2, 3], X[:2])
    with pytest.raises(lshdb.InvalidParameterError, match="not a single key"):
        index.add("abc", X[:1])
    unchanged(index, path)


def test_bad_query_input(index):
    with pytest.raises(lshdb.DimensionMismatchError):
        index.query(np.ones(5))
    with pytest.raises(lshdb.InvalidVectorError, match="1-D"):
        index.query(np.ones((2, 32)))
    with pytest.raises(lshdb.InvalidParameterError, match="k must be"):
        index.query(np.ones(32), k=0)
    with pytest.raises(lshdb.InvalidParameterError, match="probes"):
        index.query(np.ones(32), probes=0)


def test_unknown_metric_and_options(tmp_path):
    with pytest.raises(lshdb.InvalidParameterError, match="unknown metric 'cosin'"):
        lshdb.create(str(tmp_path / "a"), metric="cosin", dim=8)
    with pytest.raises(lshdb.InvalidParameterError, match="unknown option 'tables'"):
        lshdb.create(str(tmp_path / "b"), metric="cosine", dim=8, tables=4)
    with pytest.raises(lshdb.InvalidParameterError, match="k must be an int in 1..64"):
        lshdb.create(str(tmp_path / "c"), metric="cosine", dim=8, k=0)
    with pytest.raises(lshdb.InvalidParameterError, match="no width"):
        lshdb.create(str(tmp_path / "d"), metric="cosine", dim=8, w=2.0)
    with pytest.raises(lshdb.InvalidParameterError, match="does not serve"):
        lshdb.create(str(tmp_path / "e"), metric="cosine", dim=8, family="pstable")
    with pytest.raises(lshdb.InvalidParameterError, match="dim"):
        lshdb.create(str(tmp_path / "f"), metric="l2", dim=0)
    assert not any(os.listdir(tmp_path))  # nothing half-created


def test_create_refuses_existing_path(index, path):
    with pytest.raises(lshdb.IndexExistsError):
        lshdb.create(path, metric="cosine", dim=32)


def test_path_that_is_not_an_index(tmp_path):
    with pytest.raises(lshdb.NotAnIndexError, match="does not exist"):
        lshdb.open(str(tmp_path / "nothing"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(lshdb.NotAnIndexError, match="no CURRENT"):
        lshdb.open(str(tmp_path / "plain"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(lshdb.NotAnIndexError, match="is a file"):
        lshdb.open(str(tmp_path / "file"))


def test_newer_format_version_is_refused(index, path):
    import lmdb

    index.close()
    env = lmdb.open(os.path.join(path, "g000001"), max_dbs=8)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", pack_meta({"format_version": 99}), db=meta)
    env.close()
    with pytest.raises(lshdb.FormatVersionError, match="version 99"):
        lshdb.open(path)


def test_readonly_refuses_writes(index, path, data):
    X, _ = data
    with lshdb.open(path, readonly=True) as ro:
        with pytest.raises(lshdb.ReadOnlyError):
            ro.add([1000], X[:1])


def _read_as_reader_without_write_rights(path, queries, out):
    """In a forked child: give up the right to write (root: become nobody), then query."""
    if os.geteuid() == 0:
        os.setuid(65534)
    res = {}
    try:
        with lshdb.open(path, readonly=True) as ro:
            res["hits"] = [[[k, float(d)] for k, d in ro.query(q, k=5)] for q in queries]
            res["n"] = len(ro)
        try:
            lshdb.open(path)
        except lshdb.ReadOnlyError as exc:
            res["write"] = str(exc)
    except Exception as exc:  # reported to the parent, which fails the test with it
        res["error"] = repr(exc)
    out.put(res)


def test_an_index_this_process_may_not_write_answers_read_only_queries(data):
    """Permissions, not a read-only mount (where LMDB copes by itself): the lock file cannot
    be opened for writing."""
    X, Q = data
    folder = tempfile.mkdtemp(prefix="lshdb-ro-")  # world-readable, unlike tmp_path
    try:
        path = os.path.join(folder, "ix.lshdb")
        with lshdb.create(path, metric="l2", dim=32, k=4, L=4, w=8.0) as ix:
            ix.add(range(len(X)), X)
            want = [[[k, float(d)] for k, d in ix.query(q, k=5)] for q in Q[:5]]
        for root, _dirs, files in os.walk(folder):
            os.chmod(root, 0o555)
            for f in files:
                os.chmod(os.path.join(root, f), 0o444)
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_read_as_reader_without_write_rights,
                            args=(path, Q[:5], out))
        child.start()
        got = out.get(timeout=120)
        child.join(30)
        assert "error" not in got, got["error"]
        assert got["hits"] == want and got["n"] == len(X)
        assert "open it with readonly=True" in got["write"]
    finally:
        for root, _dirs, _files in os.walk(folder):
            os.chmod(root, 0o755)
        shutil.rmtree(folder)


def test_closed_index(index):
    index.close()
    with pytest.raises(lshdb.IndexClosedError):
        index.query(np.ones(32))


def test_hamming_input_rules(tmp_path):
    ix = lshdb.create(str(tmp_path / "h"), metric="hamming", dim=64)
    codes = np.random.default_rng(0).integers(0, 256, (10, 8), dtype=np.uint8)
    ix.add(range(10), codes)
    with pytest.raises(lshdb.InvalidVectorError, match="packed uint8"):
        ix.add([20], codes[:1].astype(np.int64))
    with pytest.raises(lshdb.DimensionMismatchError, match="bytes per row"):
        ix.add([21], np.zeros((1, 7), np.uint8))
    bits = np.unpackbits(codes[:1], axis=1).astype(bool)
    ix.add(["bits"], bits)
    np.testing.assert_array_equal(ix.get("bits"), codes[0])
    with pytest.raises(lshdb.InvalidParameterError, match="multiple of 8"):
        lshdb.create(str(tmp_path / "h2"), metric="hamming", dim=60)
    ix.close()


def test_unary_input_rules(tmp_path):
    ix = lshdb.create(str(tmp_path / "u"), metric="l1", dim=8, family="unary", max_value=10)
    ix.add(range(3), np.array([[1] * 8, [2] * 8, [10] * 8]))
    with pytest.raises(lshdb.InvalidVectorError, match="up to 10"):
        ix.add([5], np.full((1, 8), 11))
    with pytest.raises(lshdb.InvalidVectorError, match="non-negative integer"):
        ix.add([6], np.full((1, 8), 1.5))
    assert len(ix) == 3
    ix.close()
