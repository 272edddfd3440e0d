"""The row file's checksums: :meth:`RowFile.verify` agrees with :meth:`RowFile.read`."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lshdb.errors import CorruptIndexError
from lshdb.storage.rows import RowFile


@pytest.fixture
def rows(tmp_path):
    path = os.path.join(tmp_path, "rows.bin")
    f = RowFile(path, 5, np.dtype(np.float32), writable=True, create=True)
    f.write(0, np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32))
    f.sync()
    yield f, path
    f.close()


def test_verify_passes_intact_rows_and_refuses_ids_past_the_committed_ones(rows):
    f, _ = rows
    f.verify(np.array([0, 7, 49, 7]), 50)
    f.verify(np.array([], dtype=np.int64), 50)
    for bad in ([3, 50], [40], [-1], [-50], [2**40]):
        with pytest.raises(CorruptIndexError, match="past the|committed"):
            f.verify(np.array(bad, dtype=np.int64), 40 if bad == [40] else 50)


@pytest.mark.parametrize("offset", [0, 22, 27])  # a payload byte, padding, the checksum
def test_verify_finds_a_damaged_row_as_read_does(rows, offset):
    f, path = rows
    with open(path, "r+b") as fh:  # row 12 starts after the 64-byte header
        fh.seek(64 + 12 * f.row_bytes + offset)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))
    reopened = RowFile(path, 5, np.dtype(np.float32), writable=False)
    try:
        reopened.verify(np.array([11, 13]), 50)
        for ids in ([12], [0, 12, 49]):
            with pytest.raises(CorruptIndexError, match="row 12 .* fails its checksum"):
                reopened.verify(np.array(ids), 50)
            with pytest.raises(CorruptIndexError, match="row 12 .* fails its checksum"):
                reopened.read(np.array(ids), 50)
    finally:
        reopened.close()
