"""Shingling and shingle hashing: the bulk numpy code against the plain-Python definition."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lshdb.errors import InvalidParameterError, InvalidVectorError
from lshdb.hashing import bytehash as text_mod
from lshdb.hashing.shingles import (
    JaccardOracle,
    char_shingles,
    exact_jaccard,
    hash_strings,
    normalize,
    pair_jaccard,
    parse_shingle,
    shingle_hashes,
    shingle_token_hashes,
    word_shingles,
)

# pieces that exercise case folding, every kind of whitespace, multi-byte UTF-8, characters
# whose lower case is longer ("İ"), lone surrogates (JSON can hold them) and punctuation
PIECES = ["a", "b", "ab", "B", "Ab", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c",
          "\x1f", "\x85", "\xa0", "\u2003", "\u3000", "\u2028", "é", "É", "İ", "ß", "日本",
          "\ud800", "x.y", "(", "0", "€"]


def random_texts(count: int, seed: int, max_pieces: int = 40) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, max_pieces)))
            for _ in range(count)]


def expected_csr(texts: list[str], ref, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    sets = [np.unique(hash_strings(sorted(ref(t, n)))) for t in texts]
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets])))
    return offsets, sets


def assert_like_reference(texts: list[str], kind: str, n: int) -> None:
    """shingle_hashes of ``texts`` equal the hashes of the reference shingles."""
    ref = word_shingles if kind == "word" else char_shingles
    offsets, hashes = shingle_hashes(texts, kind, n)
    want_offsets, want = expected_csr(texts, ref, n)
    assert np.array_equal(offsets, want_offsets)
    assert np.array_equal(hashes, np.concatenate(want))


@pytest.mark.parametrize("kind, ref", [("word", word_shingles), ("char", char_shingles)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_bulk_hashes_are_the_hashes_of_the_reference_shingles(kind, ref, n):
    texts = random_texts(400, seed=n)
    offsets, hashes = shingle_hashes(texts, kind, n)
    want_offsets, want = expected_csr(texts, ref, n)
    assert np.array_equal(offsets, want_offsets)
    for i in range(len(texts)):
        assert np.array_equal(hashes[offsets[i]:offsets[i + 1]], want[i]), repr(texts[i])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES + list("abcdefg ")), max_size=60).map("".join),
                min_size=1, max_size=8),
       st.sampled_from(["word", "char"]), st.integers(1, 6))
def test_bulk_matches_reference_hypothesis(texts, kind, n):
    assert_like_reference(texts, kind, n)


def test_reference_definition():
    t = "The  quick\tBROWN fox"
    assert word_shingles(t, 2) == {"the quick", "quick brown", "brown fox"}
    assert word_shingles(t, 5) == {"the", "quick", "brown", "fox"}  # fewer words than n
    assert char_shingles("Ab  C", 3) == {"ab ", "b c"}
    assert char_shingles("ab", 3) == {"ab"}
    assert word_shingles(" \n", 3) == set() and char_shingles("\t", 2) == set()
    assert normalize("  A\u2003b\n") == "a b"


def test_unicode_whitespace_list_is_complete():
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    joined = "".join(f"w{i}{s}" for i, s in enumerate(spaces))
    offsets, hashes = shingle_hashes([joined], "word", 1)
    assert offsets[-1] == len(spaces)  # every whitespace character separates words
    assert np.array_equal(np.sort(hashes), np.unique(hash_strings(joined.split())))


def test_unicode_whitespace_collapses_in_both_kinds():
    # runs of multi-byte spaces next to ASCII ones and letters (upper case, ASCII or not)
    spaces = [chr(c) for c in range(0x80, 0x110000) if chr(c).isspace()]
    texts = [f"Ab{s}\t{t}Éx{s}{s}Q " for s in spaces for t in spaces[:3]] + ["ASCII Only TEXT"]
    for kind in ("word", "char"):
        assert_like_reference(texts, kind, 2)


def test_long_non_ascii_texts_skip_lower_only_when_it_is_a_no_op(monkeypatch):
    # below the size threshold every non-ASCII text is lowered; at 0 each one is checked
    monkeypatch.setattr(text_mod, "_LOWER_CHECK_BYTES", 0)
    texts = random_texts(300, seed=5) + ["Ab \u00e9t\u00e9 \u65e5\u672c X", "Ab \u00c9t\u00e9 X",
                                          "Q \U0001d400 \U00010400 z", "A \ud800 \u0130 B"]
    for kind in ("word", "char"):
        assert_like_reference(texts, kind, 2)


def test_blocks_do_not_change_the_result(monkeypatch):
    texts = random_texts(300, seed=11, max_pieces=120)
    whole = shingle_hashes(texts, "word", 3)
    whole_c = shingle_hashes(texts, "char", 4)
    monkeypatch.setattr(text_mod, "_BLOCK_BYTES", 64)
    monkeypatch.setattr(text_mod, "_BLOCK_DOCS", 7)
    for got, want in ((shingle_hashes(texts, "word", 3), whole),
                      (shingle_hashes(texts, "char", 4), whole_c)):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_hashes_are_stable_golden_values():
    # fixed across runs and machines: changing them invalidates stored signatures
    assert hash_strings(["hello big", "big world"]).tolist() == [
        17319282257493539953, 2774736735859772400]
    off, h = shingle_hashes(["Hello big\u3000World"], "word", 2)
    assert h.tolist() == [2774736735859772400, 17319282257493539953]
    assert not np.array_equal(shingle_hashes(["Hello big World"], "word", 2, seed=1)[1], h)


def test_spec_strings_and_kind_with_size():
    assert parse_shingle("word:5") == ("word", 5)
    assert parse_shingle(" CHAR:4 ") == ("char", 4)
    assert parse_shingle("word") == ("word", 5)
    assert parse_shingle(("char", 256)) == ("char", 256)
    a = shingle_hashes(["a b c d"], "word:2")
    b = shingle_hashes(["a b c d"], "word", 2)
    assert np.array_equal(a[1], b[1])


@pytest.mark.parametrize("spec", ["word:0", "word:65", "char:257", "char:-1", "line:3",
                                  "word:x", "word:2.5", "", ("word", True), 5])
def test_absurd_specs_are_rejected(spec):
    with pytest.raises(InvalidParameterError):
        parse_shingle(spec)


def test_empty_and_bad_inputs():
    off, h = shingle_hashes(["", "  \n\t", "a b"], "word", 5)
    assert off.tolist() == [0, 0, 0, 2]
    off, h = shingle_hashes([], "char", 3)
    assert off.tolist() == [0] and len(h) == 0
    with pytest.raises(InvalidVectorError, match="text 1"):
        shingle_hashes(["ok", b"bytes"], "word", 2)  # type: ignore[list-item]
    with pytest.raises(InvalidVectorError):
        shingle_hashes("one string", "word", 2)


def test_repeated_shingles_are_counted_once():
    off, h = shingle_hashes(["a a a a a a", "ab ab ab"], "word", 2)
    assert off.tolist() == [0, 1, 2]
    off, h = shingle_hashes(["aaaaaa"], "char", 3)
    assert len(h) == 1


def test_token_hashes_are_datasketch_sha1_of_the_shingle_strings():
    texts = random_texts(80, seed=5)
    texts = [t.replace("\ud800", "?") for t in texts]
    for kind, ref, width, fmt in (("word", word_shingles, 32, "<I"),
                                  ("char", char_shingles, 64, "<Q")):
        off, tok = shingle_token_hashes(texts, kind, 3, width=width)
        for i, t in enumerate(texts):
            want = {struct.unpack(fmt, hashlib.sha1(s.encode()).digest()[:width // 8])[0]
                    for s in ref(t, 3)}
            assert set(tok[off[i]:off[i + 1]].tolist()) == want


def test_exact_jaccard_equals_the_jaccard_of_the_strings():
    texts = random_texts(200, seed=3, max_pieces=30)
    off, h = shingle_hashes(texts, "word", 2)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(texts), (2, 500))
    sets = [word_shingles(t, 2) for t in texts]
    ok = np.array([bool(sets[a] or sets[b]) for a, b in zip(i, j)])
    i, j = i[ok], j[ok]
    want = np.array([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in zip(i, j)])
    assert np.array_equal(pair_jaccard(off, h, i, j), want)
    oracle = JaccardOracle(off, h)
    assert np.array_equal(oracle(j, i), want)
    a, b = int(i[0]), int(j[0])
    assert exact_jaccard(h[off[a]:off[a + 1]], h[off[b]:off[b + 1]]) == want[0]


def test_jaccard_of_two_empty_sets_is_an_error():
    off, h = shingle_hashes(["", "a b", ""], "word", 2)
    assert pair_jaccard(off, h, [0], [1]).tolist() == [0.0]
    with pytest.raises(InvalidVectorError, match=r"pair \(0, 2\)"):
        pair_jaccard(off, h, [0], [2])
    with pytest.raises(InvalidVectorError):
        exact_jaccard([], [])
    with pytest.raises(InvalidVectorError):
        pair_jaccard(off, h, [0, 1], [1])
    with pytest.raises(InvalidVectorError):
        pair_jaccard(off, h, [0], [3])
