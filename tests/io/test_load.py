"""Bulk loading through the library: batches, what a failure leaves, waiting for the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import lshdb
from lshdb.errors import InvalidParameterError, InvalidVectorError, LockTimeoutError
from lshdb.io.items import key_field_of, open_items
from lshdb.io.load import Loader


def _source(tmp_path, X):
    np.save(tmp_path / "x.npy", X)
    return open_items("l2", str(tmp_path / "x.npy"))


def test_a_failed_batch_keeps_the_earlier_ones_and_skip_resumes(tmp_path, path):
    X = np.random.default_rng(0).standard_normal((250, 8)).astype(np.float32)
    X[170, 3] = np.nan  # in the fourth batch of 50
    src = _source(tmp_path, X)
    seen = []
    with lshdb.create(path, metric="l2", dim=8) as index:
        loader = Loader(index, batch=50, progress=lambda *a: seen.append(a))
        with pytest.raises(InvalidVectorError, match="row 170"):
            loader.run(src)
        assert loader.committed == 150
        assert sorted(index.keys()) == list(range(150))
        assert seen[-1] == ("adding", 150, 250)  # the failed block was not counted
        X[170, 3] = 0.0
        counts = Loader(index, mode="skip", batch=100).run(_source(tmp_path, X))
        assert counts == {"added": 100, "replaced": 0, "skipped": 150}
        assert index.stats(buckets=False)["rows"] == 250  # nothing written twice
        np.testing.assert_array_equal(index.get(249), X[249])
        counts = Loader(index, mode="upsert").run(src, keys=list(range(200, 450)))
        assert counts == {"added": 200, "replaced": 50, "skipped": 0}
        assert len(index) == 450


def test_keys_must_match_and_modes_are_checked(tmp_path, path):
    src = _source(tmp_path, np.ones((4, 2), np.float32))
    with lshdb.create(path, metric="l2", dim=2) as index:
        with pytest.raises(lshdb.errors.InputFormatError, match="3 keys for 4 vectors"):
            Loader(index).run(src, keys=[1, 2, 3])
        with pytest.raises(InvalidParameterError, match="mode must be one of"):
            Loader(index, mode="merge")
        with pytest.raises(InvalidParameterError, match="batch must be at least 1"):
            Loader(index, batch=0)
        assert len(index) == 0


def test_on_wait_is_called_once_when_another_writer_holds_the_lock(tmp_path, path):
    src = _source(tmp_path, np.ones((3, 2), np.float32))
    lshdb.create(path, metric="l2", dim=2).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import lshdb, sys\n"
         f"with lshdb.open({path!r}).writer():\n    print('held', flush=True)\n"
         "    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    calls = []
    try:
        assert holder.stdout.readline() == "held\n"
        with lshdb.open(path) as index:
            loader = Loader(index, timeout=0.2, on_wait=lambda: calls.append(1))
            with pytest.raises(LockTimeoutError):
                loader.run(src)
            assert calls == [1] and loader.committed == 0
            release = threading.Timer(0.3, lambda: (holder.stdin.write("\n"),
                                                    holder.stdin.flush()))
            release.start()
            assert Loader(index, on_wait=lambda: calls.append(2)).run(src)["added"] == 3
            release.join()
            assert calls == [1, 2]
    finally:
        holder.kill()
        holder.wait(30)


def test_key_field_of_finds_key_or_id(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 1, "vector": [1, 2]}\n')
    (tmp_path / "b.jsonl").write_text('{"name": 1, "vector": [1, 2]}\n')
    assert key_field_of(str(tmp_path / "a.jsonl")) == ("id", True)
    assert key_field_of(str(tmp_path / "a.jsonl"), "name") == ("name", False)
    assert key_field_of(str(tmp_path / "x.npy")) == ("key", False)
    with pytest.raises(lshdb.errors.InputFormatError, match="no 'key' or 'id' field"):
        key_field_of(str(tmp_path / "b.jsonl"))


def test_lower_priority_reaches_every_thread():
    code = ("import os, numpy, lshdb.priority as p; p.lower_priority(6); print(sorted({"
            "os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "2"})
    assert out.stdout.strip() == str([min(os.nice(0) + 6, 19)])
