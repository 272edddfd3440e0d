"""One writer, many readers, crashes: real processes, real SIGKILL, real LMDB."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lshdb
from lshdb import check

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import readertest  # noqa: E402


def tool(name, *args, timeout=600):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_crash_harness_short_run(tmp_path):
    # (long runs of thousands of kills: benchmarks/results/longruns.md)
    stats = tool("crashtest.py", "--kills", 18, "--seed", 11, "--batches-per-kill", 2,
                 "--dir", tmp_path)
    assert stats["kills"] == 18 and stats["check_failures"] == 0 and stats["mismatches"] == 0
    # each kill waited for two acknowledged batches; every 17th batch is a compaction
    assert stats["batches_acked"] >= 36 and stats["compactions"] >= 2


def test_crash_harness_fast_durability(tmp_path):
    stats = tool("crashtest.py", "--kills", 6, "--seed", 12, "--durability", "fast",
                 "--dir", tmp_path)
    assert stats["kills"] == 6 and stats["mismatches"] == 0


def test_crash_harness_with_rows_flushed_in_the_background(tmp_path):
    # every batch's rows start flushing on a helper thread; kills land while it runs
    stats = tool("crashtest.py", "--kills", 8, "--seed", 13, "--early-flush", 1,
                 "--batches-per-kill", 2, "--dir", tmp_path)
    assert stats["kills"] == 8 and stats["check_failures"] == 0 and stats["mismatches"] == 0
    assert stats["batches_acked"] >= 16


def test_readers_see_only_committed_states(tmp_path):
    result = readertest.run(readers=4, seconds=2, map_size=None, workdir=str(tmp_path),
                            min_batches=50, min_answers=500)
    assert result["inconsistent"] == 0, result["notes"]
    assert result["writer_exit"] == 0 and result["reader_exits"] == [0, 0, 0, 0]
    assert result["answers"] >= 500 and result["batches_committed"] >= 50


def test_map_grows_while_readers_in_other_processes_read(tmp_path):
    initial = 1 << 17
    result = readertest.run(readers=2, seconds=1, map_size=initial, workdir=str(tmp_path),
                            min_batches=150)
    assert result["inconsistent"] == 0, result["notes"]
    assert result["writer_exit"] == 0 and result["reader_exits"] == [0, 0]
    assert result["data_mdb_bytes"] > initial  # the map had to grow


def test_map_grows_inside_one_transaction(path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 32)).astype(np.float32)
    with lshdb.create(path, metric="l2", dim=32, k=4, L=8, w=8.0, map_size=1 << 16) as index:
        with index.writer() as w:  # MapFullError mid-block: grow, replay, carry on
            w.add(range(10_000), X[:10_000])
            w.add(range(10_000, 20_000), X[10_000:])
            w.delete(range(0, 20_000, 7))
        assert len(index) == 20_000 - len(range(0, 20_000, 7))
    assert check(path)["ok"]


def _hold_writer(path, ready, release):
    index = lshdb.open(path)
    with index.writer():
        ready.set()
        release.wait(30)
    index.close()


def test_second_writer_waits_and_times_out(path, data):
    X, _ = data
    lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0).close()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_writer, args=(path, ready, release))
    holder.start()
    assert ready.wait(30)
    with lshdb.open(path) as index:
        t0 = time.monotonic()
        with pytest.raises(lshdb.LockTimeoutError, match="another writer held the write lock"):
            with index.writer(timeout=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3  # it waited the whole timeout
        assert holder.is_alive()  # ... while the holder still held the lock
        with index.reader() as r:  # readers are never blocked by the writer
            assert len(r) == 0
        release.set()
        with index.writer(timeout=30) as w:  # waits for the lock, then gets it
            w.add([1], X[:1])
        assert len(index) == 1
    holder.join(30)
    assert holder.exitcode == 0


def test_threads_share_one_writer_lock(path, data):
    X, _ = data
    index = lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0)
    entered, release, errors = threading.Event(), threading.Event(), []

    def hold():
        with index.writer():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    try:
        with index.writer(timeout=0.1):
            pass
    except lshdb.LockTimeoutError as exc:
        errors.append(exc)
    release.set()
    t.join()
    assert len(errors) == 1
    with index.writer(timeout=5) as w:
        w.add([7], X[:1])
    assert 7 in index
    index.close()


def test_a_one_shot_write_inside_a_writer_block_of_the_same_thread_is_refused(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0) as index:
        with index.writer(timeout=5) as w:
            w.add([1], X[:1])
            # waiting for the lock this thread holds would never end: an alarm turns such
            # a hang into a failure
            def hung(*_):
                raise AssertionError("the one-shot write waited for its own thread's lock")

            old = signal.signal(signal.SIGALRM, hung)
            signal.alarm(20)
            try:
                with pytest.raises(lshdb.LshdbError, match="already holds the write lock"):
                    index.add([2], X[1:2])
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)
            w.add([3], X[2:3])
        assert sorted(index.keys()) == [1, 3]
        index.add([4], X[3:4])  # the lock was released
        assert 4 in index


def test_close_rolls_back_an_open_write_block_and_frees_the_lock(path, data):
    X, _ = data
    index = lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0)
    w = index.writer()
    w.__enter__()
    w.add([1], X[:1])
    index.close()
    with pytest.raises(lshdb.IndexClosedError, match="rolled back"):
        w.__exit__(None, None, None)
    with lshdb.open(path) as again:  # another handle gets the lock at once
        with again.writer(timeout=2) as w2:
            w2.add([2], X[1:2])
        assert again.keys() == [2]
    # a block open in another thread: close() refuses instead of pulling the
    # environment from under it
    index = lshdb.open(path)
    inside, finish = threading.Event(), threading.Event()

    def hold():
        with index.writer() as w3:
            w3.add([3], X[2:3])
            inside.set()
            finish.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(30)
    with pytest.raises(lshdb.LshdbError, match="open in another thread"):
        index.close()
    finish.set()
    t.join(30)
    index.close()
    with lshdb.open(path) as again:
        assert sorted(again.keys()) == [2, 3]


def _write_after_compaction(path, X, started, go):
    index = lshdb.open(path)  # opened on generation 1
    started.set()
    go.wait(30)
    index.add(["late"], X[:1])  # must land in the generation CURRENT names now
    index.close()


def test_writer_in_another_process_follows_a_compaction(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0) as index:
        index.add(range(100), X[:100])
        index.delete(range(50))
    ctx = mp.get_context("spawn")
    started, go = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_write_after_compaction, args=(path, X, started, go))
    other.start()
    assert started.wait(30)
    with lshdb.open(path) as index:
        report = index.compact()
        assert report["generation"] == "g000002" and report["reclaimed_rows"] == 50
    go.set()
    other.join(30)
    assert other.exitcode == 0
    with lshdb.open(path, readonly=True) as index:
        assert index.generation == "g000002" and len(index) == 51 and "late" in index
    assert sorted(os.listdir(path)) == ["CURRENT", "g000002", "writer.lock"]
    assert check(path)["ok"]


def test_reader_open_during_compaction_moves_on(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0) as index:
        index.add(range(200), X[:200])
    reader = lshdb.open(path, readonly=True)

    def write() -> None:
        with lshdb.open(path) as writer:
            writer.delete(range(100))
            writer.compact()
            writer.add(["new"], X[:1])

    with reader.reader() as r:  # a snapshot held across the compaction in another thread
        t = threading.Thread(target=write)
        t.start()
        t.join(60)
        assert len(r) == 200 and "new" not in r  # the old snapshot is untouched
        np.testing.assert_array_equal(r.get(3), X[3])
    assert len(reader) == 101 and "new" in reader and reader.generation == "g000002"
    reader.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_reopens_the_environment(path, data):
    X, _ = data
    index = lshdb.create(path, metric="l2", dim=32, k=2, L=2, w=9.0)
    index.add(range(10), X[:10])
    assert index.query(X[3], k=1)[0][0] == 3
    pid = os.fork()
    if pid == 0:  # the child uses the inherited handle: it must reopen, not reuse
        code = 1
        try:
            if index.query(X[4], k=1)[0][0] == 4:
                index.add(["from-child"], X[10:11])
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "from-child" in index and len(index) == 11
    index.close()
