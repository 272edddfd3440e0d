"""OpenBLAS runs on one thread during lshdb's calls, and is restored after each."""

from __future__ import annotations

import os
import threading

import pytest

import lshdb
from lshdb.hashing.families import Hyperplane
from lshdb.index import blas

pytestmark = pytest.mark.skipif(blas.threads() is None,
                                reason="numpy here does not use OpenBLAS")


@pytest.fixture
def two_threads():
    """OpenBLAS set to 2 threads for the test (whatever the machine), then put back."""
    setter, getter = blas._get_libs()[0]  # numpy's
    before = getter()
    setter(2)
    yield
    setter(before)


def test_single_threaded_sets_one_and_restores(two_threads):
    assert blas.threads() == 2
    with blas.single_threaded():
        assert blas.threads() == 1
        with blas.single_threaded():  # nested blocks keep one thread
            assert blas.threads() == 1
        assert blas.threads() == 1
    assert blas.threads() == 2


def test_restored_after_an_exception(two_threads):
    with pytest.raises(ValueError), blas.single_threaded():
        raise ValueError("inside the block")
    assert blas.threads() == 2


def test_parallel_gives_the_threads_back_inside_a_single_threaded_block(two_threads):
    with blas.single_threaded():
        with blas.parallel():
            assert blas.threads() == 2
        assert blas.threads() == 1
        with blas.for_rows(blas.PARALLEL_ROWS - 1):
            assert blas.threads() == 1
        with blas.for_rows(blas.PARALLEL_ROWS):
            assert blas.threads() == 2
    assert blas.threads() == 2


def test_overlapping_blocks_in_threads_restore_once_the_last_ends(two_threads):
    entered, release = threading.Event(), threading.Event()

    def hold():
        with blas.single_threaded():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    with blas.single_threaded():
        assert blas.threads() == 1
    assert blas.threads() == 1  # the other thread's block is still open
    release.set()
    t.join(10)
    assert blas.threads() == 2


def test_lshdb_calls_run_single_threaded_and_open_blocks_leave_other_work_alone(
        two_threads, path, data, monkeypatch):
    X, _ = data
    seen = []
    real = Hyperplane.hash

    def hash_and_record(self, rows):
        seen.append(blas.threads())
        return real(self, rows)

    monkeypatch.setattr(Hyperplane, "hash", hash_and_record)
    with lshdb.create(path, metric="cosine", dim=32, k=8, L=4) as index:
        with index.writer() as w:
            assert blas.threads() == 2  # an open block: other numpy work keeps its threads
            w.add(range(100), X[:100])  # ... lshdb's own work runs on one
            assert blas.threads() == 2
        with index.reader() as r:
            assert blas.threads() == 2
            assert r.query(X[0], k=1)[0][0] == 0
            assert blas.threads() == 2
        with pytest.raises(lshdb.KeyExistsError), index.writer() as w:
            w.add([0], X[:1])
        assert blas.threads() == 2
        assert index.query(X[1], k=1)[0][0] == 1
        assert blas.threads() == 2
    assert seen and set(seen) == {1}  # every hashing, of the writes and the queries


def test_small_writes_hash_on_one_thread_bulk_loads_on_all(two_threads, path, data, monkeypatch):
    X, _ = data
    seen = []
    real = Hyperplane.hash

    def hash_and_record(self, rows):
        seen.append((len(rows), blas.threads()))
        return real(self, rows)

    monkeypatch.setattr(Hyperplane, "hash", hash_and_record)
    monkeypatch.setattr(blas, "PARALLEL_ROWS", 1000)
    with lshdb.create(path, metric="cosine", dim=32, k=8, L=4) as index:
        index.add(range(1500), X[:1500])  # a bulk load
        index.add(range(1500, 1600), X[1500:1600])  # a small batch
        index.query(X[0], k=3)  # a query
    assert seen == [(1500, 2), (100, 1), (1, 1)]


def test_a_forked_child_starts_with_no_block_open(two_threads):
    # a block open in the parent (say a reader thread's) must not pin the child to 1 thread
    with blas.single_threaded():
        pid = os.fork()
        if pid == 0:  # the child: no block of its own is open
            ok = blas.threads() == 2 and blas._single == 0
            with blas.single_threaded():
                ok = ok and blas.threads() == 1
            ok = ok and blas.threads() == 2
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert blas.threads() == 1
    assert os.waitstatus_to_exitcode(status) == 0
    assert blas.threads() == 2


def test_every_loaded_openblas_is_set(monkeypatch):
    # scipy's wheels bring a second OpenBLAS; numpy's alone being set would leave scipy's
    pytest.importorskip("scipy.linalg")
    monkeypatch.setattr(blas, "_searched", False)  # search again with scipy's copy loaded
    monkeypatch.setattr(blas, "_libs", [])
    loaded = blas._loaded_openblas()
    if len(loaded) < 2:
        pytest.skip("only one OpenBLAS is loaded here")
    libs = blas._get_libs()
    assert len(libs) == len(loaded)
    before = [get() for _, get in libs]
    try:
        for set_, _ in libs:
            set_(2)
        with blas.single_threaded():
            assert [get() for _, get in libs] == [1] * len(libs)
        assert [get() for _, get in libs] == [2] * len(libs)
    finally:
        for (set_, _), n in zip(libs, before):
            set_(n)
