"""Near-duplicate detection: planted pairs against a brute-force oracle, input errors,
clusters, and the output files."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

import lshdb
from lshdb.errors import DuplicateKeyError, InputFormatError, InvalidParameterError
from lshdb.hashing.shingles import word_shingles
from lshdb.io.jsonl import read_jsonl_docs
from lshdb.text import dedup as dedup_mod
from lshdb.text.dedup import connected_components, dedup
from lshdb.text.files import (
    dedup_against_jsonl,
    dedup_jsonl,
    write_clusters,
    write_kept,
    write_pairs,
)


def planted_corpus(seed: int = 0) -> tuple[list[str], list[str]]:
    """150 random documents of 200 words plus 100 edited copies (0-12 words replaced)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(200)) for _ in range(150)]
    for i in range(100):
        words = texts[i].split()
        for _ in range(rng.randint(0, 12)):
            words[rng.randrange(200)] = rng.choice(vocab)
        texts.append(" ".join(words))
    keys = [f"doc{i:03d}" for i in range(len(texts))]
    return keys, texts


def true_pairs(texts: list[str], threshold: float, n: int = 5) -> dict[tuple[int, int], float]:
    sets = [word_shingles(t, n) for t in texts]
    out = {}
    for a, b in itertools.combinations(range(len(texts)), 2):
        if sets[a] or sets[b]:
            j = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
            if j >= threshold:
                out[(a, b)] = j
    return out


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str], dict[tuple[int, int], float]]:
    keys, texts = planted_corpus()
    return keys, texts, true_pairs(texts, 0.5)


@pytest.mark.parametrize("threshold", [0.5, 0.8])
@pytest.mark.parametrize("mode", ["oph", "classic"])
def test_finds_planted_pairs_with_exact_similarities(corpus, threshold, mode):
    keys, texts, truth = corpus
    truth = {p: j for p, j in truth.items() if j >= threshold}
    result = dedup(keys, texts, threshold=threshold, mode=mode)
    found = {(a, b): j for a, b, j in zip(result.pair_a.tolist(), result.pair_b.tolist(),
                                          result.jaccard.tolist())}
    assert set(found) <= set(truth)  # precision 1.0 with exact verification
    assert all(found[p] == truth[p] for p in found)  # the exact similarity, not an estimate
    sure = {p for p, j in truth.items() if j >= 0.95}
    assert sure <= set(found)  # a pair at 0.95 is missed with probability ~1e-6
    assert len(found) >= 0.9 * len(truth) and len(truth) >= 20


def test_each_pair_once_and_in_order(corpus):
    keys, texts, _ = corpus
    result = dedup(keys, texts, threshold=0.5)
    pairs = list(zip(result.pair_a.tolist(), result.pair_b.tolist()))
    assert all(a < b for a, b in pairs)
    assert pairs == sorted(set(pairs))
    assert result.stats["similar_pairs"] == len(pairs)
    assert result.stats["candidate_pairs"] >= len(pairs)


def test_huge_bucket_is_verified_in_blocks_and_every_pair_found(monkeypatch):
    rng = random.Random(1)
    same = " ".join(f"v{rng.randrange(500)}" for _ in range(40))
    texts = [same] * 45 + [" ".join(f"u{rng.randrange(500)}" for _ in range(40))
                           for _ in range(30)]
    keys = list(range(len(texts)))
    monkeypatch.setattr(dedup_mod, "_PAIR_BLOCK", 7)
    result = dedup(keys, texts, threshold=0.9)
    pairs = set(zip(result.pair_a.tolist(), result.pair_b.tolist()))
    assert pairs == set(itertools.combinations(range(45), 2))
    assert len(result.pair_a) == len(pairs)  # no pair reported twice across bands
    assert np.all(result.jaccard == 1.0)
    assert [c.tolist() for c in result.clusters] == [list(range(45))]


def test_estimate_verification_keeps_pairs_by_signature(corpus):
    keys, texts, truth = corpus
    result = dedup(keys, texts, threshold=0.8, verify="estimate")
    assert np.all(result.jaccard >= 0.8)
    found = set(zip(result.pair_a.tolist(), result.pair_b.tolist()))
    sure = {p for p, j in truth.items() if j >= 0.95}
    assert sure <= found


def test_clusters_from_a_chain_of_edits():
    rng = random.Random(2)
    words = [f"x{rng.randrange(10**6)}" for _ in range(100)]
    a = " ".join(words)
    b = " ".join(words[:90] + ["b"] * 10)  # J(a, b) ~ 0.8: edits at the end
    c = " ".join(["c"] * 10 + words[10:90] + ["b"] * 10)  # like b, edits at the start
    other = " ".join(f"y{i}" for i in range(100))
    result = dedup(["a", "other", "b", "c"], [a, other, b, c], threshold=0.75)
    j = {(x, y): s for x, y, s in result.pairs()}
    assert set(j) == {("a", "b"), ("b", "c")}  # J(a, c) is below the threshold ...
    assert result.labels.tolist() == [0, -1, 0, 0]  # ... but they share a cluster
    assert [m.tolist() for m in result.clusters] == [[0, 2, 3]]
    assert result.stats["clusters"] == 1 and result.stats["duplicates"] == 2


def test_connected_components_by_hand():
    edges = np.array([[5, 6], [1, 3], [3, 4], [6, 9], [0, 0], [8, 7]])
    root = connected_components(10, edges[:, 0], edges[:, 1])
    assert root.tolist() == [0, 1, 2, 1, 1, 5, 5, 7, 7, 5]
    chain = np.arange(999)
    assert np.all(connected_components(1000, chain[::-1], chain[::-1] + 1) == 0)
    assert connected_components(3, [], []).tolist() == [0, 1, 2]


def test_empty_documents_are_reported_not_paired():
    texts = ["", "a b c d e f g", "   ", "a b c d e f g"]
    result = dedup(["e1", "x", "e2", "y"], texts, threshold=0.5)
    assert result.empty.tolist() == [0, 2]
    assert result.stats["empty_documents"] == 2
    assert list(result.pairs()) == [("x", "y", 1.0)]
    assert result.kept("first").tolist() == [True, True, True, False]


@pytest.mark.parametrize("bad", [dict(threshold=0.0), dict(threshold=1.5), dict(threshold=-1),
                                 dict(verify="maybe"), dict(mode="fast"), dict(num_perm=1),
                                 dict(bands=(20, 10)), dict(shingle="word:0")])
def test_bad_options_are_rejected(bad):
    with pytest.raises(InvalidParameterError):
        dedup(["a"], ["some text here"], **bad)


def test_duplicate_keys_and_mismatched_lengths():
    with pytest.raises(DuplicateKeyError, match="'k'"):
        dedup(["k", "j", "k"], ["a", "b", "c"])
    with pytest.raises(InvalidParameterError):
        dedup(["k"], ["a", "b"])


def test_progress_reports_every_phase(corpus):
    keys, texts, _ = corpus
    seen = []
    dedup(keys, texts, progress=lambda phase, done, total: seen.append((phase, done, total)))
    phases = [p for p, _, _ in seen]
    for phase in ("shingle", "sign", "band", "verify", "cluster"):
        assert phase in phases
    assert all(0 <= d <= t for _, d, t in seen)


# -- files -------------------------------------------------------------------------------


def write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_read_jsonl_docs(tmp_path):
    p = tmp_path / "docs.jsonl"
    write_lines(p, [b'{"id": "a", "text": "x y"}', b"", b'{"id": 7, "text": "\\u00e9 z", "m": 1}'])
    assert read_jsonl_docs(p) == (["a", 7], ["x y", "é z"])


@pytest.mark.parametrize("line, message", [
    (b'{"id": "b", "text": "caf\xe9"}', "not valid UTF-8"),
    (b'{"id": "b", "text": ', "not valid JSON"),
    (b'["b", "text"]', "expected a JSON object"),
    (b'{"id": "b"}', "no 'text' field"),
    (b'{"text": "t"}', "no 'id' field"),
    (b'{"id": "b", "text": 5}', "must be a string"),
    (b'{"id": null, "text": "t"}', "string or an integer"),
    (b'{"id": "a", "text": "t"}', "repeats line 1"),
])
def test_bad_lines_are_errors_with_line_numbers(tmp_path, line, message):
    p = tmp_path / "bad.jsonl"
    write_lines(p, [b'{"id": "a", "text": "fine"}', b"   ", line, b'{"id": "c", "text": "t"}'])
    with pytest.raises(InputFormatError, match=f"bad.jsonl:3: .*{message}"):
        read_jsonl_docs(p)


def test_writers_and_keep_policies(tmp_path):
    rng = random.Random(4)
    base = " ".join(f"t{rng.randrange(10**5)}" for _ in range(60))
    longer = base + " tail words here"
    rows = [{"id": "s1", "text": "unrelated words " * 3 + "one"},
            {"id": "d1", "text": base},
            {"id": "e", "text": ""},
            {"id": "d2", "text": longer},
            {"id": "s2", "text": "other unrelated text of its own kind"}]
    src = tmp_path / "in.jsonl"
    raw = [json.dumps(r).encode() for r in rows]
    write_lines(src, raw)
    out_pairs, out_clusters = tmp_path / "pairs.jsonl", tmp_path / "clusters.jsonl"
    result = dedup_jsonl(src, threshold=0.8, pairs=out_pairs, clusters=out_clusters)
    pairs = [json.loads(x) for x in out_pairs.read_text().splitlines()]
    assert len(pairs) == 1 and pairs[0]["a"] == "d1" and pairs[0]["b"] == "d2"
    assert pairs[0]["jaccard"] == pytest.approx(56 / 59)
    assert [json.loads(x) for x in out_clusters.read_text().splitlines()] == [
        {"cluster": 0, "size": 2, "keys": ["d1", "d2"]}]
    assert write_kept(result, src, tmp_path / "first.jsonl", keep="first") == 4
    assert (tmp_path / "first.jsonl").read_bytes().splitlines() == [raw[0], raw[1], raw[2], raw[4]]
    assert write_kept(result, src, tmp_path / "long.jsonl", keep="longest") == 4
    assert (tmp_path / "long.jsonl").read_bytes().splitlines() == [raw[0], raw[2], raw[3], raw[4]]
    assert write_pairs(result, tmp_path / "p2.jsonl") == 1
    assert write_clusters(result, tmp_path / "c2.jsonl") == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(InvalidParameterError):
        write_kept(result, src, tmp_path / "x.jsonl", keep="shortest")
    write_lines(src, raw[:3])  # the source changed since it was read
    with pytest.raises(InputFormatError, match="changed"):
        write_kept(result, src, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(InvalidParameterError, match="tresholdd"):
        dedup_jsonl(src, tresholdd=0.5)


def test_dedup_against_an_index_finds_the_indexed_near_duplicates(tmp_path):
    words = [f"w{i}" for i in range(40)]
    indexed = {"old": " ".join(words), "other": " ".join(reversed(words[:30]))}
    ix = str(tmp_path / "docs.lshdb")
    with lshdb.create(ix, metric="jaccard", shingle="word:1", store_tokens=True) as index:
        index.add(list(indexed), list(indexed.values()))
    docs = [{"id": "near", "text": " ".join(words[:38] + ["x1", "x2"])},
            {"id": "far", "text": "nothing in common at all here"}]
    src = tmp_path / "new.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    seen = []
    summary = dedup_against_jsonl(src, ix, tmp_path / "pairs.jsonl", threshold=0.8,
                                  progress=lambda *a: seen.append(a))
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pairs == [{"a": "near", "b": "old", "jaccard": 38 / 42}]
    assert (summary["documents"], summary["pairs"]) == (2, 1)
    assert seen[-1] == ("matching", 2, 2)
    dense = str(tmp_path / "dense.lshdb")
    lshdb.create(dense, metric="l2", dim=2).close()
    with pytest.raises(InputFormatError, match="is a l2 index, not jaccard"):
        dedup_against_jsonl(src, dense, tmp_path / "p2.jsonl", threshold=0.8)
    assert not (tmp_path / "p2.jsonl").exists()
