"""Posting lists on a real LMDB: chunking, tails, sealing, gap encoding, removal."""

from __future__ import annotations

import lmdb
import numpy as np
import pytest

from lshdb.errors import CorruptIndexError
from lshdb.storage import postings
from lshdb.storage.codec import decode_many, decode_postings, encode_postings


@pytest.fixture
def table(tmp_path):
    env = lmdb.open(str(tmp_path / "env"), max_dbs=2, map_size=1 << 28)
    db = env.open_db(b"t000")
    yield env, db
    env.close()


def bucket_ids(env, db, bucket: int) -> np.ndarray:
    with env.begin() as txn:
        values = postings.read_buckets([txn.cursor(db)], [0], int(bucket).to_bytes(8, "big"))
    return np.sort(decode_many(values))


def chunks(env, db) -> list[tuple[bytes, bytes, int]]:
    with env.begin() as txn:
        return [(b, s, len(ids)) for b, s, ids in postings.iter_table(txn, db)]


@pytest.mark.parametrize("ids", [[7], [1, 2], [0, 5, 65540, 65541], list(range(0, 10**6, 9))])
def test_encoding_round_trip(ids):
    a = np.array(ids, dtype=np.uint32)
    for compact in (False, True):
        np.testing.assert_array_equal(decode_postings(encode_postings(a, compact)), a)
    if len(a) > 2 and np.diff(a).max() < 65536:
        assert len(encode_postings(a, True)) < len(encode_postings(a, False))


def test_garbled_chunks_are_reported():
    for bad in (b"", b"\x90", b"\xc4\x05abcde", b"\xc7\x03\x01abc", b"\xc7\x06\x02" + b"\0" * 6):
        with pytest.raises(CorruptIndexError):
            decode_postings(bad)


def test_bulk_load_groups_and_seals(table):
    env, db = table
    rng = np.random.default_rng(0)
    n = 3 * postings.SEALED_MAX + 10
    buckets = rng.integers(0, 3, n).astype(np.uint64)
    buckets[: 2 * postings.SEALED_MAX + 5] = 9  # one bucket needs several sealed chunks
    ids = np.arange(n)
    with env.begin(write=True) as txn:
        postings.bulk_load(txn.cursor(db), buckets, ids)
    for b in (0, 1, 2, 9):
        np.testing.assert_array_equal(bucket_ids(env, db, b), ids[buckets == b])
    big = [c for c in chunks(env, db) if c[0] == (9).to_bytes(8, "big")]
    assert [size for _, _, size in big] == [postings.SEALED_MAX, postings.SEALED_MAX,
                                           int((buckets == 9).sum()) - 2 * postings.SEALED_MAX]


@pytest.mark.parametrize("spread", [1, 2**40 + 3], ids=["small-keys", "hashed-keys"])
def test_bulk_load_of_many_buckets_matches_a_model(table, spread):
    # thousands of buckets: many share a size, so their chunks are built as numpy blocks,
    # gap-encoded (more than 2 ids, gaps below 2**16) and plain (1-2 ids, or a large gap)
    env, db = table
    rng = np.random.default_rng(5)
    sizes = rng.choice([1, 2, 3, 4, 7, 30], 3000)
    buckets = np.repeat(np.arange(3000, dtype=np.uint64) * np.uint64(spread), sizes)
    buckets = buckets[rng.permutation(len(buckets))]
    # a bucket's ids lie ~3,000 positions apart: gaps of ~6,000, and a few past 2**16
    steps = np.where(rng.random(len(buckets)) < 1e-4, 70_000, rng.integers(1, 4, len(buckets)))
    ids = np.cumsum(steps)
    with env.begin(write=True) as txn:
        assert postings.bulk_load(txn.cursor(db), buckets, ids) == 3000
    for b in rng.choice(3000, 300, replace=False).tolist():
        bucket = np.uint64(b) * np.uint64(spread)
        np.testing.assert_array_equal(bucket_ids(env, db, int(bucket)), ids[buckets == bucket])
    with env.begin() as txn:  # both encodings occur
        heads = {value[0] for _, value in txn.cursor(db)}
    assert heads == {0xC4, 0xC7}


def test_appends_touch_only_the_tail(table):
    env, db = table
    n = 50_000
    with env.begin(write=True) as txn:
        postings.bulk_load(txn.cursor(db), np.zeros(n, np.uint64), np.arange(n))
    sealed_before = chunks(env, db)
    with env.begin() as txn:
        sealed_bytes = {k: v for k, v in txn.cursor(db)}
    next_id = n
    for batch in (1, 5, postings.TAIL_MAX, 3):
        with env.begin(write=True) as txn:
            postings.append(txn, db, np.zeros(batch, np.uint64), np.arange(next_id, next_id + batch))
        next_id += batch
    np.testing.assert_array_equal(bucket_ids(env, db, 0), np.arange(next_id))
    with env.begin() as txn:
        after = {k: v for k, v in txn.cursor(db)}
    # the bulk-loaded chunks are byte-for-byte untouched; the rest is tail and sealed tail
    for k, v in sealed_bytes.items():
        assert after[k] == v
    new = [c for c in chunks(env, db) if c[:2] not in {(b, s) for b, s, _ in sealed_before}]
    assert new[-1][1] == postings.TAIL and all(size <= postings.SEALED_MAX for *_, size in new)
    assert sum(size for *_, size in new) == next_id - n


def test_remove_from_sealed_chunks_and_tail(table):
    env, db = table
    rng = np.random.default_rng(1)
    n = 40_000
    buckets = rng.integers(0, 4, n).astype(np.uint64)
    with env.begin(write=True) as txn:
        postings.bulk_load(txn.cursor(db), buckets, np.arange(n))
        postings.append(txn, db, np.array([2, 2, 3], np.uint64), np.arange(n, n + 3))
    buckets = np.concatenate([buckets, [2, 2, 3]]).astype(np.uint64)
    gone = rng.choice(n + 3, 5000, replace=False)
    gone = np.union1d(gone, [n, n + 2, 0])
    with env.begin(write=True) as txn:
        assert postings.remove(txn, db, buckets[gone], gone) == 0
        # removing what is not there is counted, not an error
        assert postings.remove(txn, db, buckets[gone[:3]], gone[:3]) == 3
    keep = np.setdiff1d(np.arange(n + 3), gone)
    for b in range(4):
        np.testing.assert_array_equal(bucket_ids(env, db, b), keep[buckets[keep] == b])


def test_empty_chunks_are_deleted(table):
    env, db = table
    with env.begin(write=True) as txn:
        postings.bulk_load(txn.cursor(db), np.array([5, 5, 6], np.uint64), np.arange(3))
        postings.remove(txn, db, np.array([5, 5], np.uint64), np.array([0, 1]))
    assert [(b, size) for b, _, size in chunks(env, db)] == [((6).to_bytes(8, "big"), 1)]


@pytest.mark.parametrize("n_buckets", [4, 2000], ids=["few-buckets", "many-buckets"])
@pytest.mark.parametrize("spread", [1, 2**40 + 3], ids=["small-keys", "hashed-keys"])
def test_random_appends_match_a_model(table, spread, n_buckets):
    # batch sizes that walk tails across the bin8/bin16 header boundary (64 ids) and past
    # TAIL_MAX (sealing), into buckets with and without existing tails; hashed (wide) keys
    # take the value-sort path of stable_bucket_order; many buckets give batches with many
    # new tails of equal counts (built as numpy blocks) beside existing ones
    env, db = table
    rng = np.random.default_rng(11)
    model: dict[int, list[int]] = {}
    next_id = 0
    for _ in range(60):
        size = int(rng.choice([1, 3, 40, 63, 64, 65, 200, 479, 481, 3000]))
        buckets = rng.integers(0, n_buckets, size).astype(np.uint64) * np.uint64(spread)
        ids = np.arange(next_id, next_id + size)
        next_id += size
        with env.begin(write=True) as txn:
            postings.append(txn, db, buckets, ids)
        for b, i in zip(buckets.tolist(), ids.tolist()):
            model.setdefault(b, []).append(i)
    for b, expect in model.items():
        np.testing.assert_array_equal(bucket_ids(env, db, b), expect)
    for _bucket, suffix, size in chunks(env, db):
        assert size <= (postings.TAIL_MAX if suffix == postings.TAIL else postings.SEALED_MAX)
    with env.begin() as txn:  # every tail is written plain, the form appends slice
        for key, value in txn.cursor(db):
            if key[8:] == postings.TAIL:
                assert value[0] in (0xC4, 0xC5)


def test_appending_to_a_garbled_tail_is_reported(table):
    env, db = table
    with env.begin(write=True) as txn:
        txn.put((5).to_bytes(8, "big") + postings.TAIL, b"\xc4\x05abcde", db=db)
    with env.begin(write=True) as txn, pytest.raises(CorruptIndexError):
        postings.append(txn, db, np.array([5], np.uint64), np.array([9]))


def test_decode_many_equals_decoding_chunk_by_chunk():
    rng = np.random.default_rng(2)
    values = []
    for n in (1, 2, 3, 5, 60, 200, 480, 3000, 20000):
        for compact in (False, True):
            top = 10**8 if n == 20000 else 10**6  # wide gaps: the plain form
            a = np.sort(rng.choice(top, n, replace=False)).astype(np.uint32)
            values.append(encode_postings(a, compact))
    assert {v[0] for v in values} >= {0xC4, 0xC5, 0xC6, 0xC7, 0xC8}
    one_by_one = np.concatenate([decode_postings(v) for v in values]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(decode_many(values)), np.sort(one_by_one))
    assert len(decode_many([])) == 0
    for bad in (b"\xc4\x05abcde", b"\xc7\x03\x01abc", b"\xc8\x00\x07\x01" + b"\0" * 6):
        with pytest.raises(CorruptIndexError):
            decode_many([values[0], bad])


@pytest.mark.parametrize("case", ["small", "hashed", "shared-high-bits", "wide-but-few-bits",
                                  "fills-the-word", "one-bit-too-wide"])
def test_stable_bucket_order_equals_a_stable_argsort(case):
    rng = np.random.default_rng(11)
    n = 50_000
    if case == "small":
        b = rng.integers(0, 4096, n).astype(np.uint64)
    elif case == "hashed":
        b = rng.integers(0, 2**64, 3000, dtype=np.uint64)[rng.integers(0, 3000, n)]
    elif case == "shared-high-bits":  # buckets equal above the low 16 bits: must fall back
        base = rng.integers(0, 2**64, 40, dtype=np.uint64) & ~np.uint64(0xFFFF)
        b = base[rng.integers(0, 40, n)] | rng.integers(0, 4, n).astype(np.uint64)
    elif case == "fills-the-word":  # 48-bit keys and 16-bit positions: exactly 64 bits
        b = (rng.integers(0, 300, n) | (1 << 47)).astype(np.uint64)
    elif case == "one-bit-too-wide":  # 49-bit keys from few values: the high-bits path
        b = (rng.integers(0, 300, n) << 32 | (1 << 48)).astype(np.uint64)
    else:
        b = rng.integers(0, 2**24, n).astype(np.uint64)
    assert np.array_equal(postings.stable_bucket_order(b), np.argsort(b, kind="stable"))
