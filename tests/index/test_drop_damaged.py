"""Rows that fail their checksum: delete them, or drop them all with check --fix --drop-damaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb import check
from lshdb.cli.main import cli

DIM = 16
ROW_BYTES = DIM * 4 + 8  # float32 payload + checksum
HEADER = 64


def _flip(path, row: int, byte: int = 5) -> None:
    """Flip one bit of row ``row``'s payload in rows.bin, as a failing disk would."""
    gen = (path / "CURRENT").read_text().strip()
    rows = path / gen / "rows.bin"
    with open(rows, "r+b") as f:
        f.seek(HEADER + row * ROW_BYTES + byte)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x10]))


def _build(path) -> np.ndarray:
    X = np.random.default_rng(4).normal(size=(3005, DIM)).astype(np.float32)
    with lshdb.create(path, metric="l2", dim=DIM) as index:
        index.add([f"k{i}" for i in range(3000)], X[:3000])  # into the tables
        index.add([f"k{i}" for i in range(3000, 3005)], X[3000:])  # a small batch: a run
        assert index.stats()["runs"] == 1 and index.family is not None
    return X


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_check_drop_damaged_removes_them_lists_their_keys_and_leaves_a_sound_index(tmp_path):
    path = tmp_path / "ix.lshdb"
    X = _build(path)
    for row in (10, 2500, 3002, 77):  # in the tables, and in the run
        _flip(path, row)
    with lshdb.open(path) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="fails its checksum"):
            index.get("k10")
    # a damaged key can be deleted like any other (its postings are found by a scan)
    r = CliRunner().invoke(cli, ["delete", str(path), "--keys", "-"], input="k77\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"deleted": 1, "items": 3004}
    r = run("check", path)
    assert r.exit_code == 1 and "fails its checksum" in r.stdout
    r = run("check", path, "--drop-damaged")
    assert r.exit_code == 1 and "give --fix too" in r.stderr
    r = run("check", path, "--fix", "--drop-damaged", "--format", "table")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[:3] == ['dropped: "k10"', 'dropped: "k2500"', 'dropped: "k3002"']
    assert lines[-1] == "ok"
    gone = {"k10", "k2500", "k3002", "k77"}
    report = check(str(path))
    assert report["ok"], report["problems"]
    with lshdb.open(path) as index:
        assert len(index) == 3001
        keep = [i for i in range(3005) if f"k{i}" not in gone]
        # every other item answers, through its buckets, with its own vector
        hits = index.query_batch(X[keep], k=1, scan=False)
        assert [h[0][0] for h in hits] == [f"k{i}" for i in keep]
        assert all(h[0][1] == 0.0 for h in hits)
        # the dropped keys can be added again
        index.add(sorted(gone), X[[int(k[1:]) for k in sorted(gone)]])
        assert index.query(X[10], k=1, scan=False) == [("k10", 0.0)]
    assert check(str(path))["ok"]


def test_python_check_drop_damaged(tmp_path):
    path = tmp_path / "ix.lshdb"
    _build(path)
    _flip(path, 1234, byte=0)
    with lshdb.open(path) as index:
        with pytest.raises(lshdb.InvalidParameterError, match="pass fix=True"):
            index.check(drop_damaged=True)
        report = index.check(fix=True, drop_damaged=True)
        assert report["ok"], report["problems"]
        assert report["dropped"] == ["k1234"]
        assert "k1234" not in index and len(index) == 3004
        report = index.check(fix=True, drop_damaged=True)  # nothing left to drop
        assert report["ok"] and report["dropped"] == [] and report["fixed"] == []
