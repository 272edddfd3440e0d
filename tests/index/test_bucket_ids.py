"""Index.bucket_ids and Reader.bucket_ids against the index's own posting lists."""

from __future__ import annotations

import numpy as np
import pytest

import lshdb
from lshdb.errors import DimensionMismatchError, LshdbError


def test_index_bucket_ids_are_the_buckets_its_tables_hold(path, data):
    X, Q = data
    index = lshdb.create(path, metric="cosine", dim=32)
    with index.writer() as w:
        w.add(range(len(X)), X)
    H = index.bucket_ids(X)
    L = index.family.L
    assert H.dtype == np.int64 and H.shape == (len(X), L)
    hq = index.bucket_ids(Q[:5])
    with index.reader() as r:
        assert np.array_equal(r.bucket_ids(Q[:5]), hq)
        for i in range(5):
            # the rows sharing a bucket with the query in some table are its candidates
            ids, _ = r.candidates(Q[i], probes=L, candidates=0, min_hits=1)
            expected = np.flatnonzero((H == hq[i]).any(axis=1))
            assert np.array_equal(np.sort(ids), expected)
    with pytest.raises(DimensionMismatchError):
        index.bucket_ids(np.ones((2, 31)))
    index.close()


def test_index_bucket_ids_before_calibration(tmp_path):
    index = lshdb.create(str(tmp_path / "small.lshdb"), metric="cosine", dim=8)
    index.add(["a", "b"], np.eye(8)[:2])
    with pytest.raises(LshdbError, match="not chosen its hash family"):
        index.bucket_ids(np.eye(8)[:1])
    index.close()
