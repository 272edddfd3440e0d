"""Handles left open are closed when collected, with a ResourceWarning, as Python's files."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

import lshdb


def open_fds(folder: str) -> int:
    """This process's descriptors on files inside ``folder`` (other threads of the test
    process, such as an earlier test's Dask client, open and close their own meanwhile)."""
    folder = os.path.realpath(folder)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        n += target.startswith(folder + os.sep)
    return n


@pytest.fixture
def small(path):
    with lshdb.create(path, metric="l2", dim=4, k=2, L=2, w=4.0) as index:
        index.add(range(10), np.arange(40, dtype=np.float32).reshape(10, 4))
    gc.collect()
    return path


def test_unclosed_indexes_release_their_descriptors_when_collected(small):
    before = open_fds(small)
    assert before == 0
    with pytest.warns(ResourceWarning, match="unclosed lshdb index"):
        for _ in range(20):
            index = lshdb.open(small)  # the previous handle is dropped, never closed
            assert index.query(np.arange(4, dtype=np.float32), k=1)[0][0] == 0
        del index
        gc.collect()
    assert open_fds(small) == before  # rows, LMDB environment and lock files all closed
    with lshdb.open(small) as index:  # the shared environment was released, not lost
        assert len(index) == 10
        assert open_fds(small) > before  # the count sees an open index
    assert open_fds(small) == before


def test_an_unexited_reader_is_ended_when_collected(small):
    index = lshdb.open(small)
    reader = index.reader().__enter__()  # never exited
    assert len(reader) == 10
    with pytest.warns(ResourceWarning, match="unclosed lshdb reader"):
        del reader
        gc.collect()
    closer = threading.Thread(target=index.close, daemon=True)  # waits for open snapshots
    closer.start()
    closer.join(60)
    assert not closer.is_alive()
