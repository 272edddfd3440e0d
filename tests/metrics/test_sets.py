"""metric='jaccard' in the index and the sets side of the CLI, against exact Jaccard."""

from __future__ import annotations

import json

import datasketch
import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb import check
from lshdb.cli.main import cli
from lshdb.hashing.shingles import word_shingles


def corpus(n=300, seed=0):
    """Random documents plus planted near-copies (a few words changed)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2000)]
    docs = [" ".join(rng.choice(vocab, 60)) for _ in range(n)]
    for i in range(0, n, 10):  # docs i+1 is a light edit of doc i
        words = docs[i].split()
        for j in rng.choice(len(words), 3, replace=False):
            words[j] = "edited"
        docs[i + 1] = " ".join(words)
    return docs


def jac(a: str, b: str, n: int = 5) -> float:
    A, B = word_shingles(a, n), word_shingles(b, n)
    return len(A & B) / len(A | B)


def test_threshold_queries_match_exact_jaccard(path):
    docs = corpus()
    with lshdb.create(path, metric="jaccard", threshold=0.5, store_tokens=True) as index:
        index.add(range(len(docs)), docs)
        assert index.family.describe()["bands"] * index.family.describe()["rows"] <= 128
        found = missed = 0
        for i in range(0, len(docs), 10):
            got = dict(index.query(docs[i], k=None, threshold=0.5))
            truth = {j: jac(docs[i], docs[j]) for j in range(len(docs))}
            want = {j for j, s in truth.items() if s >= 0.5}
            assert set(got) <= want  # exact verification: never a pair below the threshold
            for j, s in got.items():
                assert s == pytest.approx(truth[j], abs=1e-12)
            found += len(set(got) & want)
            missed += len(want - set(got))
        assert found > 0 and missed / (found + missed) < 0.05


def test_top_k_by_estimate_and_token_sets(path):
    with lshdb.create(path, metric="jaccard", threshold=0.3, num_perm=64) as index:
        index.add(["a", "b", "c"], [{"x", "y", "z", 1}, {"x", "y", "w", 1}, {b"q", "r", "s"}])
        hits = index.query({"x", "y", "z", 1}, k=2)
        assert hits[0] == ("a", 1.0) and hits[1][0] == "b" and 0.2 < hits[1][1] < 0.9
        with pytest.raises(lshdb.InvalidParameterError, match="store_tokens"):
            index.query({"x"}, exact=True)


def test_classic_mode_accepts_datasketch_signatures(path):
    sets = [{f"t{i}" for i in range(j, j + 40)} for j in range(0, 200, 5)]
    with lshdb.create(path, metric="jaccard", mode="classic", threshold=0.6, seed=1) as index:
        index.add(range(len(sets)), sets)
        for i in (0, 7):
            m = datasketch.MinHash(num_perm=128, seed=1)
            m.update_batch([t.encode() for t in sets[i]])
            np.testing.assert_array_equal(index.get(i), m.hashvalues)  # bit-identical rows
            # a datasketch user brings the signature itself
            (key, score), *_ = index.query(m.hashvalues, k=1)
            assert key == i and score == 1.0


def test_delete_upsert_compact_keep_tokens(path):
    docs = corpus(60)
    with lshdb.create(path, metric="jaccard", store_tokens=True) as index:
        index.add(range(60), docs)
        index.delete(range(0, 60, 2))
        index.upsert([1], [docs[2]])
        index.compact()
        assert dict(index.query(docs[2], k=None, threshold=0.99)) == {1: 1.0}
    report = check(path)
    assert report["ok"], report["problems"]


def test_dim_of_a_jaccard_index_is_its_num_perm(path):
    with lshdb.create(path, metric="jaccard", dim=16) as ix:
        ix.add(["a", "b"], [{"x", "y", "z"}, {"u", "v"}])
    with lshdb.open(path) as ix:  # the stored options agree with the dimension
        assert ix.metric.dim == 16 and ix.options["num_perm"] == 16
        assert ix.query({"x", "y", "z"}, k=1) == [("a", 1.0)]
    with pytest.raises(lshdb.InvalidParameterError, match="disagree"):
        lshdb.create(path + "2", metric="jaccard", dim=16, num_perm=32)


def test_bad_items(path):
    with lshdb.create(path, metric="jaccard", store_tokens=True) as index:
        with pytest.raises(lshdb.InvalidVectorError, match="item 1 has no tokens"):
            index.add([1, 2], ["some words here", "   "])
        with pytest.raises(lshdb.InvalidVectorError, match="a document \\(str\\) or a set"):
            index.add([3], [b"raw bytes"])
        with pytest.raises(lshdb.InvalidVectorError, match="item 0 is a dict"):
            index.add([5], [{"token": 1}])  # iterating a dict would take its keys
        with pytest.raises(lshdb.InvalidVectorError) as bad:
            index.add([6, 7, 8], [{"a"}, {"b"}, {"c", 2.5}])
        assert (bad.value.row, bad.value.noun) == (2, "item")
        assert bad.value.problem == "holds a float token; tokens are str, bytes or int"
        with pytest.raises(lshdb.InvalidParameterError, match="ready signatures"):
            index.add([4], np.zeros((1, 128), np.uint32))
        assert len(index) == 0
    with pytest.raises(lshdb.InvalidParameterError, match="threshold"):
        lshdb.create(path + "x", metric="jaccard", threshold=1.5)
    with pytest.raises(lshdb.InvalidParameterError, match="unknown option 'k'"):
        lshdb.create(path + "y", metric="jaccard", k=4)


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def write_docs(p, docs, key="id"):
    with open(p, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({key: f"d{i}", "text": d}) + "\n")


def test_cli_build_query_and_dedup(tmp_path):
    docs = corpus(120, seed=3)
    write_docs(tmp_path / "docs.jsonl", docs)
    ix = tmp_path / "sets.lshdb"
    out = run("build", ix, "--input", tmp_path / "docs.jsonl", "--metric", "jaccard",
              "--key-field", "id", "--text-field", "text", "--threshold", "0.5",
              "--store-tokens")
    assert json.loads(out.stdout)["added"] == 120
    res = [json.loads(x) for x in run("query", ix, "--input", tmp_path / "docs.jsonl",
                                      "--key-field", "id", "--text-field", "text",
                                      "--threshold", "0.5", "-k", "50").stdout.splitlines()]
    assert res[0]["results"][0] == {"key": "d0", "jaccard": 1.0}
    assert {r["key"] for r in res[0]["results"]} == {"d0", "d1"}
    # the self-join finds the planted pairs, each once, with exact scores
    run("dedup", tmp_path / "docs.jsonl", "--threshold", "0.5", "--out", tmp_path / "pairs.jsonl",
        "--clusters", tmp_path / "clusters.jsonl", "--keep", "first",
        "--output", tmp_path / "kept.jsonl")
    pairs = [json.loads(x) for x in open(tmp_path / "pairs.jsonl")]
    want = {(f"d{i}", f"d{i + 1}") for i in range(0, 120, 10)}
    assert {(p["a"], p["b"]) for p in pairs} == want
    for p in pairs:
        i, j = int(p["a"][1:]), int(p["b"][1:])
        assert p["jaccard"] == pytest.approx(jac(docs[i], docs[j]))
    kept = [json.loads(x)["id"] for x in open(tmp_path / "kept.jsonl")]
    assert len(kept) == 120 - len(want) and "d0" in kept and "d1" not in kept
    # --against: new documents' duplicates among the index's items
    write_docs(tmp_path / "new.jsonl", [docs[0], "nothing like the others at all " * 3])
    against = run("dedup", tmp_path / "new.jsonl", "--against", ix, "--threshold", "0.5")
    got = [json.loads(x) for x in against.stdout.splitlines()]
    assert {(g["a"], g["b"]) for g in got} == {("d0", "d0"), ("d0", "d1")}


def test_cli_add_names_a_bad_item_by_its_row_in_the_input(tmp_path):
    docs = corpus(10, seed=5)
    docs[7] = " \t "  # no words: no shingles
    write_docs(tmp_path / "docs.jsonl", docs)
    ix = tmp_path / "sets.lshdb"
    run("create", ix, "--metric", "jaccard")
    r = run("add", ix, "--input", tmp_path / "docs.jsonl", "--key-field", "id",
            "--text-field", "text", "--batch-size", 3, ok=False)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1].startswith("Error: item 7 of the input has no tokens"), \
        r.stderr


def test_cli_dedup_reports_bad_lines(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"id": 1, "text": "fine words here"}\n'
                                         b'{"id": 2, "text": "bad \xff bytes"}\n')
    r = run("dedup", tmp_path / "bad.jsonl", ok=False)
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: {tmp_path / 'bad.jsonl'}:2")
    r = run("dedup", tmp_path / "bad.jsonl", "--threshold", "0", ok=False)
    assert r.exit_code == 1 and "threshold" in r.stderr


def test_cli_dedup_refuses_bad_options_and_outputs_before_reading(tmp_path):
    # line 2 is unreadable: an option or output checked only after the reading would be
    # reported as that line instead
    (tmp_path / "bad.jsonl").write_bytes(b'{"id": 1, "text": "fine words here"}\n'
                                         b'{"id": 2, "text": "bad \xff bytes"}\n')
    for args, says in [(("--shingle", "word:0"), "word shingle size must be 1..64"),
                       (("--num-perm", 1), "--num-perm must be an int in 2..8192"),
                       (("--out", tmp_path / "no" / "pairs.jsonl"), "its folder does not exist"),
                       (("--clusters", tmp_path / "no" / "c.jsonl"), "its folder does not exist")]:
        r = run("dedup", tmp_path / "bad.jsonl", *args, ok=False)
        assert r.exit_code == 1 and says in r.stderr and ":2" not in r.stderr, (args, r.stderr)
    r = run("dedup", tmp_path / "bad.jsonl", "--num-perm", 8192, ok=False)  # as create allows
    assert r.exit_code == 1 and ":2" in r.stderr


def _candidates_by_bands(sigs, q, b, r):
    """The oracle: every item that shares at least one whole band with item q."""
    bands = sigs[:, : b * r].reshape(len(sigs), b, r)
    return set(np.flatnonzero((bands == bands[q]).all(axis=2).any(axis=1)).tolist())


@pytest.mark.parametrize("scheme", [1, 2])
def test_band_key_schemes_find_exactly_the_items_sharing_a_band(tmp_path, scheme):
    import lmdb

    from lshdb.index.format import get_meta
    from lshdb.storage.codec import pack_meta

    rng = np.random.default_rng(5)
    base = rng.integers(0, 50, (60, 64)).astype(np.uint64)  # 60 families of near copies
    sigs = np.repeat(base, 5, axis=0)
    flip = rng.random(sigs.shape) < 0.15
    sigs[flip] = rng.integers(50, 2**32, flip.sum())
    path = str(tmp_path / "sets.lshdb")
    lshdb.create(path, metric="jaccard", num_perm=64, threshold=0.7, mode="classic").close()
    if scheme == 1:  # the family record as lshdb wrote it before scheme 2 (format 2)
        env = lmdb.open(str(tmp_path / "sets.lshdb" / "g000001"), max_dbs=8)
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            fam = get_meta(txn, meta, b"family")
            assert fam.pop("keys") == 2
            txn.put(b"family", pack_meta(fam), db=meta)
            txn.put(b"format", pack_meta({"format_version": 2}), db=meta)
        env.close()
    with lshdb.open(path) as index:
        index.add(range(len(sigs)), sigs)
        b, r = index.family.L, index.family.k
        assert index.family.scheme == scheme
        with index.reader() as rd:
            for q in range(0, len(sigs), 7):
                ids, _ = rd.candidates(sigs[q])
                keys = {rd.key_of(int(i)) for i in ids}
                assert keys == _candidates_by_bands(sigs, q, b, r)
    env = lmdb.open(str(tmp_path / "sets.lshdb" / "g000001"), max_dbs=8, readonly=True)
    with env.begin() as txn:
        version = get_meta(txn, env.open_db(b"meta", txn=txn), b"format")["format_version"]
    env.close()
    assert version == (2 if scheme == 1 else 4)  # marked with the oldest format that fits
    assert check(path)["ok"]
