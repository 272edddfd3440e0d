"""Damaged files are detected: a call raises an LshdbError, it never answers silently wrong.

Each case builds a small index (2,000 x 16 l2 vectors, keys 0..1999), closes it, damages one
file, then reopens it. Random byte flips in ``data.mdb`` run in a child process, so that a
segfault or SIGBUS inside LMDB shows up as a failing exit status instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import lmdb
import numpy as np
import pytest

import lshdb
from lshdb import check
from lshdb.storage.codec import pack_id, pack_key, pack_meta

N, DIM = 2000, 16
PARAMS = {"metric": "l2", "dim": DIM, "k": 3, "L": 4, "w": 4.0}
HEADER = 64
ROW_BYTES = DIM * 4 + 8  # payload (already a multiple of 8) + checksum
GEN = "g000001"


def vectors(n: int = N, dim: int = DIM, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def built(path):
    with lshdb.create(path, **PARAMS) as index:
        index.add(range(N), vectors())
    return path


def gen_file(path: str, name: str) -> str:
    return os.path.join(path, GEN, name)


def flip(file: str, offset: int, mask: int = 0xFF) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def lmdb_put(path: str, db: bytes, key: bytes, value: bytes) -> None:
    env = lmdb.open(os.path.join(path, GEN), max_dbs=8)
    try:
        handle = env.open_db(db, create=False)
        with env.begin(write=True) as txn:
            txn.put(key, value, db=handle)
    finally:
        env.close()


def lmdb_get(path: str, db: bytes, key: bytes) -> bytes:
    env = lmdb.open(os.path.join(path, GEN), max_dbs=8, readonly=True, lock=False)
    try:
        handle = env.open_db(db, create=False)
        with env.begin() as txn:
            return bytes(txn.get(key, db=handle))
    finally:
        env.close()


def problems(path: str) -> list[str]:
    report = check(path)
    assert report["ok"] is (not report["problems"])
    assert not report["ok"], "check found nothing wrong"
    return report["problems"]


# -- rows.bin ------------------------------------------------------------------------

ROW = 123


@pytest.mark.parametrize("where", [
    [0],                  # first payload byte (low mantissa bits of value 0)
    [3],                  # sign and exponent of value 0
    [DIM * 4 - 1],        # last payload byte
    [17, 40],             # two bytes in two words
    [DIM * 4],            # first checksum byte
    [ROW_BYTES - 1],      # last checksum byte
    [5, DIM * 4 + 2],     # payload and checksum together
], ids=["payload-first", "payload-exponent", "payload-last", "payload-two", "checksum-first",
        "checksum-last", "payload-and-checksum"])
def test_flipped_row_bytes(built, where):
    X = vectors()
    for off in where:
        flip(gen_file(built, "rows.bin"), HEADER + ROW * ROW_BYTES + off)
    with lshdb.open(built, readonly=True) as index:
        with pytest.raises(lshdb.CorruptIndexError, match=f"row {ROW} of .* fails its checksum"):
            index.query(X[ROW], k=5)  # the damaged row is the true top result
        with pytest.raises(lshdb.CorruptIndexError, match=f"row {ROW} "):
            index.get(ROW)
        np.testing.assert_array_equal(index.get(ROW + 1), X[ROW + 1])  # neighbours are fine
        np.testing.assert_array_equal(index.get(ROW - 1), X[ROW - 1])
    found = [p for p in problems(built) if f"row {ROW} of" in p and "fails its checksum" in p]
    assert len(found) == 1  # once, though the bucket check reads the row again


def test_row_checksums_follow_the_documented_formula(built):
    """sum(words * W) + (i + 1) * W0 mod 2**64, recomputed with Python integers: the
    on-disk format does not depend on how numpy evaluates it."""
    from lshdb.storage.rows import _multipliers
    n_words = DIM * 4 // 8
    W, W0 = _multipliers(n_words)
    raw = open(gen_file(built, "rows.bin"), "rb").read()
    for i in (0, 1, 999, N - 1):
        rec = raw[HEADER + i * ROW_BYTES : HEADER + (i + 1) * ROW_BYTES]
        words = [int.from_bytes(rec[8 * j : 8 * j + 8], "little") for j in range(n_words)]
        want = (sum(a * int(b) for a, b in zip(words, W)) + (i + 1) * int(W0)) % 2**64
        assert int.from_bytes(rec[-8:], "little") == want


def test_flipped_padding_byte(path):
    """Padding bytes (dim 15: 60 payload bytes padded to 64) are covered by the checksum."""
    X = vectors(300, 15)
    with lshdb.create(path, metric="l2", dim=15, k=2, L=2, w=4.0) as index:
        index.add(range(300), X)
    flip(gen_file(path, "rows.bin"), HEADER + 7 * (64 + 8) + 61)
    with lshdb.open(path) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="row 7 of"):
            index.get(7)
        with pytest.raises(lshdb.CorruptIndexError, match="row 7 of"):
            index.query(X[7], k=3)
    assert any("row 7 of" in p for p in problems(path))


def test_row_written_to_the_wrong_place(built):
    """Row 10's bytes copied over row 11 (valid checksum for id 10) are caught as row 11."""
    file = gen_file(built, "rows.bin")
    with open(file, "r+b") as f:
        f.seek(HEADER + 10 * ROW_BYTES)
        row = f.read(ROW_BYTES)
        f.seek(HEADER + 11 * ROW_BYTES)
        f.write(row)
    with lshdb.open(built) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="row 11 of"):
            index.get(11)
    assert any("row 11 of" in p for p in problems(built))


@pytest.mark.parametrize("size", [
    HEADER + 1000 * ROW_BYTES,           # half the committed rows
    HEADER + (N - 1) * ROW_BYTES + 10,   # the last row cut in the middle
    HEADER,                              # the header alone
    10,                                  # part of the header
    0,
], ids=["half", "mid-last-row", "header-only", "partial-header", "empty"])
def test_truncated_rows_file(built, size):
    os.truncate(gen_file(built, "rows.bin"), size)
    X = vectors()
    with pytest.raises(lshdb.CorruptIndexError, match="truncated"):
        with lshdb.open(built, readonly=True) as index:
            index.query(X[N - 1], k=5)
    report = check(built)
    assert not report["ok"] and any("truncated" in p for p in report["problems"]), report


# -- CURRENT ---------------------------------------------------------------------------


def test_missing_current(built):
    os.unlink(os.path.join(built, "CURRENT"))
    with pytest.raises(lshdb.NotAnIndexError, match="no CURRENT file.*restore CURRENT"):
        lshdb.open(built)
    assert any("no CURRENT file" in p for p in problems(built))


@pytest.mark.parametrize("content, error, words", [
    (bytes(np.random.default_rng(3).integers(0, 256, 40, dtype=np.uint8)),
     lshdb.CorruptIndexError, "garbled.*should hold one generation name"),
    (b"", lshdb.CorruptIndexError, "garbled.*should hold one generation name"),
    (b"\n", lshdb.CorruptIndexError, "garbled"),
    (b"g000001", lshdb.CorruptIndexError, "garbled"),  # no newline: a torn write
    (b"g000001\ng000002\n", lshdb.CorruptIndexError, "garbled"),
    (b"../g000001\n", lshdb.CorruptIndexError, "garbled"),
    (b"g000009\n", lshdb.CorruptIndexError, "names g000009, which does not exist"),
], ids=["random", "empty", "newline", "no-newline", "two-lines", "path", "missing-generation"])
def test_garbled_current(built, content, error, words):
    with open(os.path.join(built, "CURRENT"), "wb") as f:
        f.write(content)
    for readonly in (False, True):
        with pytest.raises(error, match=words):
            lshdb.open(built, readonly=readonly)
    assert problems(built)


# -- meta records --------------------------------------------------------------------


@pytest.mark.parametrize("record", [{"format_version": 5}, {"format_version": 0},
                                    {"format_version": "1"}, {"format_version": True}, {}],
                         ids=["4", "0", "str", "bool", "absent"])
def test_wrong_format_version(built, record):
    lmdb_put(built, b"meta", b"format", pack_meta(record))
    with pytest.raises(lshdb.FormatVersionError, match="format version .* Upgrade lshdb"):
        lshdb.open(built)
    assert any("format version" in p for p in problems(built))


@pytest.mark.parametrize("name", [b"format", b"config", b"settings", b"family", b"state"])
@pytest.mark.parametrize("where", ["first", "last", "crc"])
def test_meta_record_with_a_bad_crc(built, name, where):
    value = bytearray(lmdb_get(built, b"meta", name))
    pos = {"first": 0, "last": len(value) - 5, "crc": len(value) - 1}[where]
    value[pos] ^= 0x01
    lmdb_put(built, b"meta", name, bytes(value))
    with pytest.raises(lshdb.CorruptIndexError, match=f"'{name.decode()}' fails its checksum"):
        with lshdb.open(built) as index:  # `state` is read by each snapshot, the rest on open
            index.query(vectors()[0], k=3)
    assert any("fails its checksum" in p for p in problems(built))


# -- key maps ------------------------------------------------------------------------


@pytest.mark.parametrize("other", [50000, 6, "5"], ids=["unknown-key", "other-key", "str"])
def test_id2key_value_changed(built, other):
    lmdb_put(built, b"id2key", pack_id(5), pack_key(other))
    X = vectors()
    with lshdb.open(built) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="key maps disagree about internal id 5"):
            index.query(X[5], k=3)
        with pytest.raises(lshdb.CorruptIndexError, match="key maps disagree"):
            index.get(5)
        assert index.query(X[700], k=1)[0] == (700, 0.0)  # items not involved still answer
    assert any(p.startswith("id2key maps id 5 to a key") for p in problems(built))


def test_key2id_value_changed(built):
    lmdb_put(built, b"key2id", pack_key(5), pack_id(6))  # key 5 now claims row 6
    X = vectors()
    with lshdb.open(built) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="key maps disagree"):
            index.get(5)
        with pytest.raises(lshdb.CorruptIndexError, match="key maps disagree about internal id 5"):
            index.query(X[5], k=3)
    assert "id2key maps id 5 to a key that key2id maps to 6" in problems(built)


def test_keys_listing_detects_a_changed_id2key_value(built):
    lmdb_put(built, b"id2key", pack_id(5), pack_key(50000))
    with lshdb.open(built) as index:
        with pytest.raises(lshdb.CorruptIndexError):
            keys = index.keys()
            assert 50000 not in keys, "keys() lists 50000, which `50000 in index` denies"


# -- data.mdb --------------------------------------------------------------------------

# Runs in a child process. argv: a JSON spec file. For each index folder it appends one JSON
# line of results to spec["out"]; before starting one it appends its number to
# spec["progress"], so that the parent knows which trial a crash or a hang belongs to.
WORKER = textwrap.dedent("""
    import json, sys, traceback
    import numpy as np
    import lshdb
    from lshdb import check

    spec = json.load(open(sys.argv[1]))
    Q = np.load(spec["queries"])
    get_keys = spec["get_keys"]

    def plain(key):
        return key if isinstance(key, int) else repr(key)

    def run(path):
        calls = []
        def call(name, fn):
            try:
                calls.append([name, "ok", fn()])
            except lshdb.LshdbError as exc:
                calls.append([name, "raised", type(exc).__name__, str(exc)[:300]])
            except Exception as exc:
                calls.append([name, "foreign", type(exc).__name__,
                              traceback.format_exc()[-1500:]])
        index = None
        try:
            index = lshdb.open(path, readonly=True)
        except lshdb.LshdbError as exc:
            calls.append(["open", "raised", type(exc).__name__, str(exc)[:300]])
        except Exception as exc:
            calls.append(["open", "foreign", type(exc).__name__, traceback.format_exc()[-1500:]])
        if index is not None:
            for i, q in enumerate(Q):
                call("query %d" % i,
                     lambda: [[plain(k), d] for k, d in index.query(q, k=10)])
            for key in get_keys:
                call("get %d" % key, lambda: index.get(key).tolist())
            call("len", lambda: len(index))
            try:
                index.close()
            except Exception as exc:
                calls.append(["close", "foreign", type(exc).__name__, repr(exc)])
        call("check", lambda: check(path))
        return calls

    with open(spec["progress"], "a") as progress, open(spec["out"], "a") as out:
        for number, path in spec["trials"]:
            progress.write("%d\\n" % number)
            progress.flush()
            out.write(json.dumps([number, run(path)]) + "\\n")
            out.flush()
""")


def run_trials(tmp_path, trials: list[tuple[int, str]], Q: np.ndarray,
               get_keys: list[int]) -> tuple[dict[int, list], dict[int, str]]:
    """Run WORKER over ``trials``; restart it after a crash. Returns results and crashes.

    A worker that outlives a generous time budget is killed: its current trial hung.
    """
    np.save(tmp_path / "queries.npy", Q)
    results: dict[int, list] = {}
    crashes: dict[int, str] = {}
    pending = list(trials)
    attempt = 0
    while pending:
        attempt += 1
        spec = tmp_path / f"spec{attempt}.json"
        progress, out = tmp_path / f"progress{attempt}.txt", tmp_path / f"out{attempt}.jsonl"
        spec.write_text(json.dumps({"queries": str(tmp_path / "queries.npy"),
                                    "get_keys": get_keys, "trials": pending,
                                    "progress": str(progress), "out": str(out)}))
        try:
            proc = subprocess.run([sys.executable, "-c", WORKER, str(spec)],
                                  timeout=60 + 2 * len(pending),
                                  capture_output=True, text=True)
            status, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            status, stderr = "timeout", str(exc.stderr or "")
        if out.exists():
            for line in out.read_text().splitlines():
                number, calls = json.loads(line)
                results[number] = calls
        started = [int(s) for s in progress.read_text().split()] if progress.exists() else []
        if status == 0:
            break
        if not started or started[-1] in results:  # died outside any trial: give up
            crashes[-1] = f"worker exit status {status}: {stderr[-2000:]}"
            break
        crashes[started[-1]] = f"exit status {status}: {stderr[-2000:]}"
        pending = [t for t in pending if t[0] not in results and t[0] not in crashes]
    return results, crashes


def judge(calls: list, X: np.ndarray, Q: np.ndarray) -> tuple[list[str], dict[str, object]]:
    """Wrong answers among ``calls`` (empty if none), and the answers themselves."""
    wrong: list[str] = []
    answers: dict[str, object] = {}
    for name, outcome, *rest in calls:
        if outcome == "foreign":
            wrong.append(f"{name} raised {rest[0]}, not an LshdbError:\n{rest[1]}")
            continue
        if outcome != "ok":
            continue
        value = rest[0]
        answers[name] = value
        if name.startswith("query"):
            q = Q[int(name.split()[1])].astype(np.float64)
            keys = [k for k, _ in value]
            if not all(isinstance(k, int) and 0 <= k < N for k in keys) or len(set(keys)) != len(keys) \
                    or len(keys) > 10:
                wrong.append(f"{name} returned unknown or repeated keys {keys}")
                continue
            got = np.array([d for _, d in value])
            true = np.sqrt(((X[keys].astype(np.float64) - q) ** 2).sum(axis=1))
            if not np.allclose(got, true, rtol=1e-5, atol=1e-6) or np.any(np.diff(got) < 0):
                wrong.append(f"{name} returned wrong or unsorted distances {value}")
        elif name.startswith("get"):
            key = int(name.split()[1])
            if not np.array_equal(np.array(value, dtype=np.float32), X[key]):
                wrong.append(f"{name} returned {value}, not the stored vector")
        elif name == "len":
            if value != N:
                wrong.append(f"len() returned {value}, not {N}")
    return wrong, answers


def flip_trial(pristine: str, dest: str, seed: int) -> list[int]:
    """Copy ``pristine`` to ``dest`` with 1-4 random bytes of data.mdb flipped."""
    os.makedirs(os.path.join(dest, GEN))
    shutil.copy(os.path.join(pristine, "CURRENT"), os.path.join(dest, "CURRENT"))
    # the trials open read-only and never write rows.bin: share it (it is 16 MiB, sparse)
    os.link(gen_file(pristine, "rows.bin"), gen_file(dest, "rows.bin"))
    raw = bytearray(open(gen_file(pristine, "data.mdb"), "rb").read())
    rng = np.random.default_rng(seed)
    offsets = sorted(rng.choice(len(raw), int(rng.integers(1, 5)), replace=False).tolist())
    for off in offsets:
        raw[off] ^= int(rng.integers(1, 256))
    with open(gen_file(dest, "data.mdb"), "wb") as f:
        f.write(raw)
    return offsets


CRASH_BUGS = ("bug: LMDB does not checksum its pages; some flips (7 of these 1,000, none "
              "wrong) make a read inside LMDB die of SIGBUS or an LMDB assertion (see "
              "test_damaged_leaf_page_is_an_error_not_a_crash); only an isolated check "
              "survives them")


@pytest.mark.parametrize("n_trials", [
    60, pytest.param(1000, marks=[pytest.mark.slow, pytest.mark.xfail(strict=True,
                                                                      reason=CRASH_BUGS)])])
def test_random_byte_flips_in_data_mdb(built, tmp_path, n_trials, record_property):
    X = vectors()
    rng = np.random.default_rng(2024)
    stored = rng.choice(N, 15, replace=False)
    Q = np.concatenate([X[stored], rng.standard_normal((15, DIM)).astype(np.float32)])
    get_keys = rng.choice(N, 50, replace=False).tolist()
    trials = [(-1, built)]  # the undamaged index first: the answers to compare with
    offsets = {}
    for seed in range(n_trials):
        dest = str(tmp_path / f"trial{seed}")
        offsets[seed] = flip_trial(built, dest, seed)
        trials.append((seed, dest))
    results, crashes = run_trials(tmp_path, trials, Q, get_keys)

    assert -1 in results, crashes
    wrong, baseline = judge(results[-1], X, Q)
    assert not wrong and all(c[1] == "ok" for c in results[-1]), results[-1]
    assert baseline["check"]["ok"], baseline["check"]

    stats = {"raised": 0, "check_only": 0, "no_effect": 0, "right_but_different": 0,
             "crashed": len(crashes), "wrong": 0}
    failures = [f"trial {n} (data.mdb offsets {offsets.get(n)}) crashed or hung: {msg}"
                for n, msg in crashes.items()]
    for seed in range(n_trials):
        if seed not in results:
            continue
        calls = results[seed]
        bad, answers = judge(calls, X, Q)
        if bad:
            stats["wrong"] += 1
            failures.append(f"trial {seed} (data.mdb offsets {offsets[seed]}): "
                            + "\n".join(bad[:3]))
            continue
        check_ok = answers.get("check", {}).get("ok", False)
        if any(c[1] == "raised" for c in calls if c[0] != "check"):
            stats["raised"] += 1
        elif not check_ok:
            stats["check_only"] += 1  # every answer right, and check saw the damage
        elif all(answers.get(c[0]) == baseline[c[0]] for c in results[-1] if c[0] != "check"):
            stats["no_effect"] += 1  # the flips hit bytes no read depends on
        else:
            stats["right_but_different"] += 1  # fewer candidates found, every answer exact
    record_property("flip_stats", stats)
    print(f"\ndata.mdb flips over {n_trials} trials: {stats}")
    assert not failures, "\n\n".join(failures[:5]) + f"\n\n{stats}"
    assert sum(stats.values()) == n_trials


@pytest.mark.parametrize("pages", [0, 1, 2, 5, 0.5], ids=["empty", "1-page", "2-pages",
                                                          "5-pages", "half"])
def test_truncated_data_mdb(built, tmp_path, pages):
    """A short data.mdb is an error on open or on the first read: never a crash."""
    data = gen_file(built, "data.mdb")
    size = os.path.getsize(data)
    os.truncate(data, int(size * pages) if isinstance(pages, float) else pages * 4096)
    X = vectors()
    results, crashes = run_trials(tmp_path, [(0, built)], X[:3], [0, 1999])
    assert not crashes, crashes
    calls = results[0]
    wrong, answers = judge(calls, X, X[:3])
    assert not wrong, wrong
    first = calls[0]
    assert first[0] in ("open", "query 0") and first[1] == "raised", calls[:2]
    assert first[2] in ("CorruptIndexError", "NotAnIndexError", "LshdbError"), first
    assert answers["check"]["ok"] is False, answers["check"]


def test_check_reports_an_id2key_id_beyond_int64(built):
    lmdb_put(built, b"id2key", pack_id(2**63 + 5), pack_key(5))
    assert any(f"id2key holds id {2**63 + 5} beyond the {N} committed rows" in p
               for p in problems(built))


def _id2key_leaf_pages(raw: bytes) -> list[tuple[int, int]]:
    """(page number, first id) of each id2key leaf page of an LMDB file (4 KiB pages).

    LMDB page header: pgno u64, pad u16, flags u16 (0x02: leaf), lower u16, upper u16, then
    u16 node offsets. Leaf node: data size u16 lo + u16 hi, flags u16, key size u16, key,
    data. id2key nodes have 8-byte keys and msgpack keys (1-9 bytes) as data.
    """
    pages = []
    for pg in range(2, len(raw) // 4096):
        page = raw[pg * 4096 : (pg + 1) * 4096]
        flags, lower = int.from_bytes(page[10:12], "little"), int.from_bytes(page[12:14], "little")
        if not flags & 0x02 or lower <= 16:
            continue
        node = int.from_bytes(page[16:18], "little")
        dsize = int.from_bytes(page[node : node + 2], "little")
        ksize = int.from_bytes(page[node + 6 : node + 8], "little")
        if ksize == 8 and 1 <= dsize <= 9:
            pages.append((pg, int.from_bytes(page[node + 8 : node + 16], "big")))
    return pages


@pytest.mark.xfail(strict=True, reason="bug: a leaf page whose node offsets point past the end "
                   "of data.mdb makes LMDB read beyond the file: the process dies of SIGBUS in "
                   "Reader.key_of (reader.py, txn.get on id2key) instead of raising "
                   "CorruptIndexError")
def test_damaged_leaf_page_is_an_error_not_a_crash(built, tmp_path):
    data = gen_file(built, "data.mdb")
    raw = bytearray(open(data, "rb").read())
    pg, first_id = max(_id2key_leaf_pages(bytes(raw)))
    assert pg * 4096 + 0xFF00 > len(raw), "the chosen page is too far from the end of the file"
    lower = int.from_bytes(raw[pg * 4096 + 12 : pg * 4096 + 14], "little")
    for ptr in range(pg * 4096 + 16, pg * 4096 + lower, 2):
        raw[ptr + 1] = 0xFF  # the high byte of each node offset: ~64 KiB into the page
    with open(data, "wb") as f:
        f.write(raw)
    X = vectors()
    results, crashes = run_trials(tmp_path, [(0, built)], X[first_id : first_id + 1],
                                  [first_id])
    assert not crashes, crashes
    calls = {c[0]: c for c in results[0]}
    assert not judge(results[0], X, X[first_id : first_id + 1])[0]
    assert calls[f"get {first_id}"][1] == "raised"
    assert calls["check"][1] == "ok" and not calls["check"][2]["ok"]


def _damage_an_id2key_leaf(path: str) -> None:
    """Point every node of the last id2key leaf page ~64 KiB into the page: past the file."""
    data = gen_file(path, "data.mdb")
    raw = bytearray(open(data, "rb").read())
    pg, _ = max(_id2key_leaf_pages(bytes(raw)))
    lower = int.from_bytes(raw[pg * 4096 + 12 : pg * 4096 + 14], "little")
    for ptr in range(pg * 4096 + 16, pg * 4096 + lower, 2):
        raw[ptr + 1] = 0xFF
    with open(data, "wb") as f:
        f.write(raw)


def test_check_reports_a_page_that_kills_lmdb_instead_of_dying(built):
    # in one process this check dies of SIGBUS (LMDB reads past the end of data.mdb);
    # isolated, and from the command line, it reports the damage
    _damage_an_id2key_leaf(built)
    script = ("import json, sys; from lshdb import check; "
               "print(json.dumps(check(sys.argv[1], isolate=True)))")
    for argv in ([sys.executable, "-c", script, built],
                 [sys.executable, "-m", "lshdb.cli", "check", built, "--format", "json"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert out.returncode in (0, 1), (out.returncode, out.stderr[-2000:])
        report = json.loads(out.stdout.splitlines()[-1])
        assert report["ok"] is False
        assert any("died of SIGBUS" in p or "died of SIGABRT" in p for p in report["problems"])


def test_an_isolated_check_reports_and_relays_progress_like_one_in_process(built):
    seen = []
    isolated = check(built, progress=lambda *a: seen.append(a), isolate=True)
    assert isolated == check(built) and isolated["ok"]
    with lshdb.open(built, readonly=True) as index:
        assert index.check() == isolated
    assert {a[0] for a in seen} == {"rows", "tables"}
    assert seen[-1][1] == seen[-1][2]  # the last table is reported done


def _short_tail_store(path: str):
    """A Store whose data.mdb ends before LMDB's last page: a transaction that allocated
    pages and freed them again before committing leaves them unwritten (they are free).
    Deterministic for this sequence; returns the open store and the bytes missing."""
    from lshdb.storage.store import Store

    os.makedirs(os.path.dirname(path), exist_ok=True)
    st = Store(path, create=True, n_tables=1)
    db = st.db(b"t000")
    rng = np.random.default_rng(0)
    with st.env.begin(write=True) as txn:
        for _ in range(5000):
            txn.put(int(rng.integers(0, 2**62)).to_bytes(8, "big"), b"x" * int(rng.integers(1, 40)),
                    db=db)
    for _ in range(20):
        with st.env.begin(write=True) as txn:
            for _ in range(2000):
                txn.put(int(rng.integers(0, 2**62)).to_bytes(8, "big"), b"y" * 20, db=db)
            c = txn.cursor(db)
            if c.set_range(int(rng.integers(0, 2**62)).to_bytes(8, "big")):
                for _ in range(4000):
                    if not c.delete():
                        break
        missing = st._pages_end() - os.path.getsize(st._data)
        if missing > 0:
            return st, missing
    raise AssertionError("LMDB left no short tail in this sequence")


def test_a_tail_of_free_pages_lmdb_left_unwritten_is_covered(tmp_path):
    from lshdb.storage.store import Store

    st, missing = _short_tail_store(str(tmp_path / "g000001"))
    assert missing > 0
    with st.env.begin() as txn:
        entries = txn.stat(st.db(b"t000"))["entries"]
    st.cover_pages()
    assert os.path.getsize(st._data) == st._pages_end()
    st.close()
    st = Store(str(tmp_path / "g000001"))  # opens: not taken for a truncated file
    with st.env.begin() as txn:
        assert sum(1 for _ in txn.cursor(st.db(b"t000"))) == entries
    st.close()


def test_free_list_accounts_for_every_page(tmp_path):
    # every page through the last is a meta page, a page of some tree, a page of the free
    # database or a free page; the free lists here outgrow a page (overflow records)
    from lshdb.storage.lmdbfile import free_list

    env = lmdb.open(str(tmp_path), map_size=1 << 30, max_dbs=2)
    db = env.open_db(b"t")
    rng = np.random.default_rng(0)
    checked_overflow = False
    for _ in range(3):
        with env.begin(write=True) as txn:
            for _ in range(20000):
                txn.put(int(rng.integers(0, 2**62)).to_bytes(8, "big"),
                        b"x" * int(rng.integers(1, 200)), db=db)
        with env.begin(write=True) as txn:
            c = txn.cursor(db)
            c.first()
            for _ in range(15000):
                c.delete()
        with env.begin() as txn:
            used = sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                       for st in (env.stat(), txn.stat(db)))
            free, own, last, _ = free_list(str(tmp_path / "data.mdb"), txn.id())
        assert 2 + used + own + len(free) == last + 1
        assert max(free) <= last and min(free) >= 2
        checked_overflow |= len(free) > 4096 // 8  # one record no longer fits a page
    assert checked_overflow
    env.close()


def _hold_write_lock(gen_dir: str) -> int:
    import fcntl

    fd = os.open(os.path.join(os.path.dirname(gen_dir), "writer.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_short_tail_of_free_pages_opens_whole(tmp_path):
    # a writer killed between LMDB's commit and the extension leaves this file; readers
    # open it as it is, and the next writable open covers the free pages
    from lshdb.storage.store import Store

    gen = str(tmp_path / "g000001")
    st, missing = _short_tail_store(gen)
    with st.env.begin() as txn:
        entries = dict(txn.cursor(st.db(b"t000")))
    short = os.path.getsize(st._data)
    st.close()  # not covered
    lock = _hold_write_lock(gen)  # a writer elsewhere: this open is read-only
    try:
        st = Store(gen)
        assert st.readonly and os.path.getsize(st._data) == short
        with st.env.begin() as txn:
            assert dict(txn.cursor(st.db(b"t000"))) == entries
        st.close()
    finally:
        os.close(lock)
    st = Store(gen)
    assert not st.readonly and os.path.getsize(st._data) == short + missing
    st.close()


def test_a_cut_into_used_pages_is_still_truncation(tmp_path):
    # cut the short-tailed file further: each open raises, or reads every entry (when only
    # free pages are gone); a wrong "free" verdict would crash the child with SIGBUS
    gen = str(tmp_path / "g000001")
    st, _ = _short_tail_store(gen)
    psize = st.env.stat()["psize"]
    short = os.path.getsize(st._data)
    st.close()
    cuts = [1, 2, 3, 5, 8, 13, 30, 60, short // psize // 2]
    script = textwrap.dedent(f"""
        import os, shutil, sys
        from lshdb.errors import CorruptIndexError
        from lshdb.storage.store import Store
        raised = 0
        for cut in {cuts!r}:
            d = os.path.join({str(tmp_path)!r}, "cut%d" % cut, "g000001")
            shutil.copytree({gen!r}, d)
            os.truncate(os.path.join(d, "data.mdb"), {short} - cut * {psize})
            print("cut", cut, flush=True)
            try:
                st = Store(d)
            except CorruptIndexError:
                raised += 1
                continue
            with st.env.begin() as txn:
                sum(1 for _ in txn.cursor(st.db(b"t000")))
            st.close()
        print("raised", raised)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == f"raised {len(cuts)}"


def _pages_short(gen_dir: str) -> int:
    """Bytes by which data.mdb ends before the last page its current meta page counts
    (read from the file: page size from the free database's record, then the meta page
    with the larger transaction id; see lshdb.storage.lmdbfile for the layout)."""
    import struct

    data = os.path.join(gen_dir, "data.mdb")
    with open(data, "rb") as f:
        first = f.read(16 + 136)
        psize = struct.unpack_from("<I", first, 16 + 24)[0]
        f.seek(psize)
        second = f.read(16 + 136)
    last, _ = max((struct.unpack_from("<QQ", m, 16 + 120) for m in (first, second)),
                  key=lambda m: m[1])
    return (last + 1) * psize - os.path.getsize(data)


@pytest.mark.parametrize("durability", ["full", "fast"])
def test_every_commit_covers_the_pages(path, durability):
    # random keys added and a run of them deleted in one transaction: LMDB allocates
    # pages and frees them again before the commit, and leaves them unwritten
    rng = np.random.default_rng(0)
    with lshdb.create(path, metric="cosine", dim=4, durability=durability, L=4,
                      k=2) as ix:
        live = [f"{rng.integers(0, 2**62):x}" + "x" * int(rng.integers(1, 40))
                for _ in range(5000)]
        ix.add(live, rng.standard_normal((5000, 4)))
        for _ in range(3):
            new = [f"{rng.integers(0, 2**62):x}y" for _ in range(2000)]
            with ix.writer() as w:
                w.add(new, rng.standard_normal((2000, 4)))
                live = sorted(live + new)
                start = int(rng.integers(0, len(live) - 3000))
                w.delete(live[start : start + 3000])
                live = live[:start] + live[start + 3000 :]
            assert _pages_short(os.path.join(path, ix.generation)) <= 0
