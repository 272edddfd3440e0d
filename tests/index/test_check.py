"""The deep integrity check finds each kind of damage, planted by writing LMDB directly."""

from __future__ import annotations

import os

import lmdb
import numpy as np
import pytest

import lshdb
from lshdb import check
from lshdb.storage import postings
from lshdb.storage.codec import encode_postings, pack_id, pack_key, pack_meta


@pytest.fixture
def built(path, data):
    X, _ = data
    with lshdb.create(path, metric="l2", dim=32, k=3, L=2, w=6.0) as index:
        index.add(range(300), X[:300])
        index.delete([10])
    return path


def raw(path):
    env = lmdb.open(os.path.join(path, "g000001"), max_dbs=8)
    return env, {n: env.open_db(n) for n in (b"meta", b"key2id", b"id2key", b"t000", b"t001")}


def test_healthy_index_passes(built):
    report = check(built)
    assert report == {"ok": True, "problems": [], "fixed": [],
                      "counts": {"rows": 300, "live": 299, "keys": 299, "runs": 0,
                                     "tables": 2}}


def _first_chunk(env, db):
    with env.begin() as txn:
        return next(iter(txn.cursor(db)))


def test_missing_posting(built):
    env, dbs = raw(built)
    key, value = _first_chunk(env, dbs[b"t000"])
    ids = postings.decode_postings(value)
    with env.begin(write=True) as txn:
        txn.put(key, encode_postings(ids[1:]), db=dbs[b"t000"])
    env.close()
    report = check(built)
    assert not report["ok"]
    assert f"table 0: 1 live ids are missing (first: {int(ids[0])})" in report["problems"]


def test_id_in_the_wrong_bucket(built):
    env, dbs = raw(built)
    with env.begin() as txn:
        items = list(txn.cursor(dbs[b"t001"]))
    (k1, v1), (k2, v2) = items[0], items[1]
    a, b = postings.decode_postings(v1), postings.decode_postings(v2)
    moved = int(a[0])
    with env.begin(write=True) as txn:
        txn.put(k1, encode_postings(a[1:]), db=dbs[b"t001"])
        txn.put(k2, encode_postings(np.sort(np.append(b, moved))), db=dbs[b"t001"])
    env.close()
    problems = check(built)["problems"]
    assert any(p.startswith("table 1: 1 ids are in the wrong bucket") for p in problems), problems


def test_duplicate_and_dead_ids(built):
    env, dbs = raw(built)
    key, value = _first_chunk(env, dbs[b"t000"])
    ids = postings.decode_postings(value)
    with env.begin(write=True) as txn:  # repeat an id in another chunk key, add the deleted 10
        txn.put(key[:8] + b"\xff\xff\xff\xfe", encode_postings(np.array([ids[0], 10])),
                db=dbs[b"t000"])
    env.close()
    problems = check(built)["problems"]
    assert any("appears more than once" in p for p in problems), problems
    assert any("posted ids are not live" in p for p in problems), problems


def test_key_maps_and_counters(built):
    env, dbs = raw(built)
    with env.begin(write=True) as txn:
        txn.put(pack_key(5), pack_id(6), db=dbs[b"key2id"])  # key 5 now claims id 6
        txn.put(b"state", pack_meta({"rows": 300, "live": 250}), db=dbs[b"meta"])
    env.close()
    problems = check(built)["problems"]
    assert "id2key maps id 5 to a key that key2id maps to 6" in problems
    assert "the live counter says 250 but id2key holds 299 ids" in problems


def test_truncated_rows_and_garbled_current(built):
    rows = os.path.join(built, "g000001", "rows.bin")
    os.truncate(rows, 64 + 100 * (32 * 4 + 8))
    assert any("rows.bin holds 100 rows; 300 are committed" in p for p in check(built)["problems"])
    with open(os.path.join(built, "CURRENT"), "w") as f:
        f.write("g00000x\n")
    report = check(built)
    assert not report["ok"] and "CURRENT is garbled" in report["problems"][0]


def test_fix_removes_stale_leftovers(built):
    os.makedirs(os.path.join(built, ".tmp-g000002"))
    with open(os.path.join(built, "CURRENT.tmp"), "w") as f:
        f.write("g000002\n")
    report = check(built)
    assert not report["ok"] and len(report["problems"]) == 2
    fixed = check(built, fix=True)
    assert sorted(fixed["fixed"]) == ["removed .tmp-g000002", "removed CURRENT.tmp"]
    assert check(built)["ok"]
