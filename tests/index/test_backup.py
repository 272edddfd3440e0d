"""lshdb backup: a consistent copy while a real writer process keeps adding."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb import check
from lshdb.cli.main import cli

DIM = 16
BATCH = 50

# adds batches of BATCH rows (vectors seeded by batch number) until the file `stop`
# exists, then one batch more; prints a line once its first batch is committed
WRITER = f"""
import os, sys
import numpy as np
import lshdb
path, stop = sys.argv[1], sys.argv[2]
with lshdb.open(path) as index:
    for b in range(1, 400):
        X = np.random.default_rng(b).normal(size=({BATCH}, {DIM}))
        index.add([f"k{{b}}-{{j}}" for j in range({BATCH})], X)
        if b == 1:
            print("writing", flush=True)
        if os.path.exists(stop):
            index.add(["last"], X[:1])
            break
"""


def _vectors(b: int) -> np.ndarray:
    return np.random.default_rng(b).normal(size=(BATCH, DIM))


def test_backup_while_a_writer_adds_is_a_whole_index_as_of_one_moment(tmp_path):
    path, dest = tmp_path / "ix.lshdb", tmp_path / "copy" / "ix.lshdb"
    with lshdb.create(path, metric="l2", dim=DIM) as index:
        index.add([f"k0-{j}" for j in range(2000)],
                  np.random.default_rng(0).normal(size=(2000, DIM)))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(tmp_path / "stop")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n"
        with lshdb.open(path, readonly=True) as src:
            report = src.backup(dest)
        (tmp_path / "stop").touch()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert check(str(dest))["ok"], check(str(dest))["problems"]
    with lshdb.open(path, readonly=True) as src, lshdb.open(dest, readonly=True) as copy:
        n = len(copy)
        assert report["live"] == report["rows"] == n and n > 2000 + BATCH - 1
        assert len(src) > n  # the writer carried on past the moment copied
        # the copy holds exactly the batches committed by then, whole
        batches = (n - 2000) // BATCH
        assert n == 2000 + batches * BATCH
        keys = set(copy.keys())
        assert keys == {f"k0-{j}" for j in range(2000)} | {
            f"k{b}-{j}" for b in range(1, batches + 1) for j in range(BATCH)}
        X = np.concatenate([np.random.default_rng(0).normal(size=(2000, DIM))]
                           + [_vectors(b) for b in range(1, batches + 1)]).astype(np.float32)
        order = [f"k0-{j}" for j in range(2000)] + [
            f"k{b}-{j}" for b in range(1, batches + 1) for j in range(BATCH)]
        Q = np.random.default_rng(77).normal(size=(20, DIM))
        for q in Q:
            # exact: brute force over the rows of that moment
            d = np.sqrt(((X - q.astype(np.float32)) ** 2).sum(1))
            want = [order[i] for i in np.argsort(d, kind="stable")[:10]]
            assert [key for key, _ in copy.query(q, k=10, scan=True)] == want
            # through the buckets: the source's answer among the items of that moment
            mine = copy.query(q, k=10, scan=False)
            theirs = [h for h in src.query(q, k=len(src), scan=False) if h[0] in keys]
            assert mine == theirs[:10]
    with lshdb.open(dest) as copy:  # an ordinary index: it takes writes
        copy.add(["new"], np.zeros((1, DIM)))
        assert copy.query(np.zeros(DIM), k=1) == [("new", 0.0)]


def test_backup_refuses_an_existing_destination(tmp_path):
    path = tmp_path / "ix.lshdb"
    with lshdb.create(path, metric="cosine", dim=4, codes=64) as index:
        index.add([1, 2], np.eye(2, 4) + 0.1)
    (tmp_path / "taken").mkdir()
    with lshdb.open(path) as index, pytest.raises(lshdb.IndexExistsError,
                                                  match="already exists"):
        index.backup(tmp_path / "taken")
    assert list((tmp_path / "taken").iterdir()) == []
    r = CliRunner().invoke(cli, ["backup", str(path), str(tmp_path / "taken")])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {tmp_path / 'taken'} already exists; a backup is "
                               "written to a new path")
    r = CliRunner().invoke(cli, ["backup", str(path), "-"])
    assert r.exit_code == 1 and "standard output (-) cannot hold" in r.stderr
    r = CliRunner().invoke(cli, ["backup", str(path), str(tmp_path / "b.lshdb")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["live"] == 2
    assert sorted(p.name for p in (tmp_path / "b.lshdb").iterdir()) == [
        "CURRENT", "g000001"]
    assert sorted(p.name for p in (tmp_path / "b.lshdb" / "g000001").iterdir()) == [
        "codes.bin", "data.mdb", "rows.bin"]
    assert check(str(tmp_path / "b.lshdb"))["ok"]
    with lshdb.open(tmp_path / "b.lshdb") as copy:
        assert copy.query(np.eye(1, 4)[0] + 0.1, k=1, scan=True)[0][0] == 1
