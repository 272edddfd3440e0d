"""MinHash signatures: datasketch compatibility, estimator accuracy, banding."""

from __future__ import annotations

import random

import datasketch
import numpy as np
import pytest

import lshdb.hashing.bands as bands_mod
import lshdb.hashing.minhash_oph as oph_mod
from lshdb.errors import InvalidParameterError, InvalidVectorError
from lshdb.hashing.minhash import (
    band_keys,
    classic_permutations,
    classic_signatures,
    classic_signatures_csr,
    estimate_jaccard,
    oph_signatures,
    text_signatures,
)
from lshdb.hashing.shingles import char_shingles, shingle_hashes, word_shingles
from lshdb.hashing.theory import optimal_bands, s_curve


def csr(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets]))).astype(np.int64)
    return offsets, np.concatenate(sets).astype(np.uint64)


def planted_pairs(union: int, inter: int, count: int, seed: int, subset: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """``count`` pairs of random 64-bit sets with |A | B| = union and |A & B| = inter."""
    rng = np.random.default_rng(seed)
    rest = union - inter
    a_only = rest if subset else rest // 2
    sets = []
    for _ in range(count):
        u = rng.integers(0, 2**63, union, dtype=np.uint64)
        sets += [u[:inter + a_only], np.concatenate((u[:inter], u[inter + a_only:]))]
    offsets, hashes = csr(sets)
    return offsets, hashes, inter / union


# -- classic: bit-identical to datasketch -----------------------------------------------


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("seed", [1, 42])
def test_classic_is_bit_identical_to_datasketch(scheme, seed):
    rng = random.Random(seed)
    sets = [[f"tok{rng.randrange(300)}".encode() for _ in range(rng.randint(1, 120))]
            for _ in range(40)]
    sigs = classic_signatures(sets, 64, seed, scheme)
    for i, tokens in enumerate(sets):
        m = datasketch.MinHash(num_perm=64, seed=seed, scheme=scheme)
        m.update_batch(tokens)
        assert sigs.dtype == m.hashvalues.dtype
        assert np.array_equal(sigs[i], m.hashvalues)
        a, b = classic_permutations(64, seed, scheme)
        assert np.array_equal(a, m.permutations[0]) and np.array_equal(b, m.permutations[1])


def test_classic_token_types_and_prehashed_fast_path():
    from datasketch.hashfunc import sha1_hash32

    words = ["alpha", "beta", "gamma", "δέλτα"]
    m = datasketch.MinHash()
    m.update_batch([w.encode("utf-8") for w in words])
    prehashed = np.array([sha1_hash32(w.encode("utf-8")) for w in words], dtype=np.uint32)
    from_str = classic_signatures([words])
    from_bytes = classic_signatures([[w.encode() for w in words]])
    from_ints = classic_signatures([[int(x) for x in prehashed]])
    from_array = classic_signatures([prehashed])
    off, hv = csr([prehashed.astype(np.uint64)])
    from_csr = classic_signatures_csr(off, hv)
    for got in (from_str, from_bytes, from_ints, from_array, from_csr):
        assert np.array_equal(got[0], m.hashvalues)


def test_classic_text_signatures_match_datasketch_on_shingles():
    texts = ["The quick brown fox jumps over the lazy dog and the quick cat",
             "Ünïcode  text\twith\u3000odd spacing and more words than five",
             "tiny text"]
    for spec, ref, n in (("word:3", word_shingles, 3), ("char:4", char_shingles, 4)):
        sigs = text_signatures(texts, spec, 128, mode="classic", seed=7)
        for i, t in enumerate(texts):
            m = datasketch.MinHash(num_perm=128, seed=7)
            m.update_batch([s.encode("utf-8") for s in ref(t, n)])
            assert np.array_equal(sigs[i], m.hashvalues)


def test_classic_rejects_empty_sets_and_bad_tokens():
    with pytest.raises(InvalidVectorError, match="set 1 is empty"):
        classic_signatures([["a"], [], ["b"]])
    with pytest.raises(InvalidVectorError, match="set 0"):
        classic_signatures([[1.5]])
    with pytest.raises(InvalidVectorError, match="32-bit"):
        classic_signatures([[1 << 40]])
    with pytest.raises(InvalidParameterError):
        classic_signatures([["a"]], scheme="affine16")
    with pytest.raises(InvalidParameterError):
        classic_signatures([["a"]], num_perm=0)


# -- one-permutation hashing -------------------------------------------------------------


def test_oph_shape_dtype_determinism_and_set_semantics():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 50, dtype=np.uint64)
    shuffled = np.concatenate((base[::-1], base[:10]))  # order and repeats do not matter
    off, h = csr([base, shuffled, base[:1]])
    sig = oph_signatures(off, h, 96, seed=3)
    assert sig.shape == (3, 96) and sig.dtype == np.uint32
    assert np.array_equal(sig[0], sig[1])
    assert len(np.unique(sig[2])) <= 24  # one token is placed in at most `rounds` bins ...
    assert len(np.unique(oph_signatures(off, h, 96, rounds=1)[2])) == 1  # ... then densified
    assert np.array_equal(sig, oph_signatures(off, h, 96, seed=3))
    assert not np.array_equal(sig, oph_signatures(off, h, 96, seed=4))
    with pytest.raises(InvalidVectorError, match="set 1 is empty"):
        oph_signatures(np.array([0, 1, 1]), np.array([5], dtype=np.uint64))
    with pytest.raises(InvalidParameterError):
        oph_signatures(off, h, 96, rounds=0)


def test_oph_blocks_do_not_change_the_signatures(monkeypatch):
    # sets of 1..3000 tokens: some complete early, some never; blocks split them differently
    rng = np.random.default_rng(7)
    sets = [rng.integers(0, 2**63, int(m), dtype=np.uint64)
            for m in rng.integers(1, 3000, 40)]
    off, h = csr(sets)
    whole = oph_signatures(off, h, 64, seed=2)
    monkeypatch.setattr(oph_mod, "_DOC_BLOCK", 3)
    monkeypatch.setattr(oph_mod, "_OPH_TOKENS", 500)
    assert np.array_equal(oph_signatures(off, h, 64, seed=2), whole)
    one_each = [oph_signatures(off[i:i + 2] - off[i], h[off[i]:off[i + 1]], 64, seed=2)
                for i in range(len(sets))]
    assert np.array_equal(np.concatenate(one_each), whole)


@pytest.mark.parametrize("union, inter", [(6, 3), (40, 28), (150, 120), (1500, 600)])
def test_oph_collision_probability_is_the_jaccard_similarity(union, inter):
    # E[estimate] = J: the mean of 1,500 independent pairs is within 4 standard errors
    # (per-pair variance at most J(1-J)/k times 1.5, the worst case measured for tiny sets)
    k, count = 128, 1500
    off, h, J = planted_pairs(union, inter, count, seed=union)
    sig = oph_signatures(off, h, k, seed=union)
    est = estimate_jaccard(sig[0::2], sig[1::2])
    se = np.sqrt(1.5 * J * (1 - J) / k / count)
    assert abs(est.mean() - J) < 4 * se
    off, h, J = planted_pairs(union, inter, count, seed=union + 1, subset=True)
    sig = oph_signatures(off, h, k, seed=1)
    assert abs(estimate_jaccard(sig[0::2], sig[1::2]).mean() - J) < 4 * se


@pytest.mark.parametrize("union", [40, 100, 400])
def test_oph_error_is_no_worse_than_classic(union):
    # measured variance ratio oph/classic is 0.5-0.8 at these sizes; with 1,000 pairs the
    # sampling error of a variance is about 5%, so "below 1" cannot fail by chance
    k, count = 128, 1000
    off, h, J = planted_pairs(union, int(union * 0.6), count, seed=7)
    oph = oph_signatures(off, h, k, seed=2)
    classic = classic_signatures_csr(off, h >> np.uint64(32), k, seed=2)
    mse_oph = np.mean((estimate_jaccard(oph[0::2], oph[1::2]) - J) ** 2)
    mse_classic = np.mean((estimate_jaccard(classic[0::2], classic[1::2]) - J) ** 2)
    assert mse_oph < mse_classic
    assert mse_classic == pytest.approx(J * (1 - J) / k, rel=0.2)  # the textbook variance


def test_oph_on_text_tracks_exact_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab) for _ in range(200)) for _ in range(100)]
    edited = []
    for t in base:
        words = t.split()
        for _ in range(rng.randint(0, 25)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        edited.append(" ".join(words))
    off, h = shingle_hashes(base + edited, "word", 3)
    sig = oph_signatures(off, h, 256)
    est = estimate_jaccard(sig[:100], sig[100:])
    exact = np.array([len(word_shingles(a, 3) & word_shingles(b, 3))
                      / len(word_shingles(a, 3) | word_shingles(b, 3))
                      for a, b in zip(base, edited)])
    assert np.sqrt(np.mean((est - exact) ** 2)) < 0.04  # sd bound sqrt(.25/256) = 0.031
    assert np.array_equal(text_signatures(base, "word:3", 256, seed=0), sig[:100])


def test_estimate_jaccard_shapes():
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    b = np.array([1, 2, 0, 4], dtype=np.uint32)
    assert estimate_jaccard(a, b) == 0.75
    m = np.stack([a, b, a])
    assert estimate_jaccard(m, a).tolist() == [1.0, 0.75, 1.0]
    assert estimate_jaccard(a, m).tolist() == [1.0, 0.75, 1.0]
    assert estimate_jaccard(m, m[::-1]).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(InvalidVectorError):
        estimate_jaccard(a, a[:3])


# -- banding -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [1, 2])
def test_band_keys_salt_each_band(scheme):
    sig = np.tile(np.arange(4, dtype=np.uint32), (3, 3))  # every band holds the same values
    sig[2, 5] = 99  # row 2 differs in band 1 only
    keys = band_keys(sig, 3, 4, scheme=scheme)
    assert keys.shape == (3, 3) and keys.dtype == np.uint64
    assert len(set(keys[0].tolist())) == 3  # same values, different bands: different keys
    assert np.array_equal(keys[0], keys[1])
    assert keys[2, 0] == keys[0, 0] and keys[2, 2] == keys[0, 2] and keys[2, 1] != keys[0, 1]
    assert not np.array_equal(band_keys(sig, 3, 4, seed=1, scheme=scheme), keys)
    swapped = sig.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # the same values in another order
    assert band_keys(swapped, 3, 4, scheme=scheme)[0, 0] != keys[0, 0]
    with pytest.raises(InvalidParameterError):
        band_keys(sig, 4, 4, scheme=scheme)
    with pytest.raises(InvalidParameterError):
        band_keys(sig, 0, 4, scheme=scheme)
    with pytest.raises(InvalidParameterError, match="scheme must be 1 or 2"):
        band_keys(sig, 3, 4, scheme=3)


def test_optimal_bands_agree_with_datasketch():
    assert optimal_bands(0.9, 128) == (5, 25)
    assert optimal_bands(0.7, 250) == (25, 10)


@pytest.mark.parametrize("scheme", [1, 2])
def test_band_collisions_follow_the_s_curve(scheme):
    # pairs at J = 0.7 become candidates with probability 1 - (1 - J^r)^b
    b, r, count = 8, 6, 1500
    off, h, J = planted_pairs(200, 140, count, seed=3)
    keys = band_keys(oph_signatures(off, h, b * r, seed=5), b, r, scheme=scheme)
    hit = (keys[0::2] == keys[1::2]).any(axis=1).mean()
    p = s_curve(J, r, b)
    assert abs(hit - p) < 4 * np.sqrt(p * (1 - p) / count) + 0.02


def test_signatures_are_stable_golden_values():
    # fixed across runs and machines: changing them invalidates stored signatures and keys
    off, h = shingle_hashes(["the quick brown fox jumps over the lazy dog"], "word", 3)
    sig = oph_signatures(off, h, 16, seed=0)
    assert sig.tolist() == [[402183555, 327778614, 64636806, 162958208, 207865869, 174872681,
                             338140420, 12771353, 48504490, 292434226, 234834396, 94824818,
                             119448776, 119678269, 354359466, 935897673]]
    assert band_keys(sig, 4, 4).tolist() == [[14052261474057876842, 18206412465283350297,
                                              12647550231823200460, 13322608534250280801]]
    assert band_keys(sig, 4, 4, scheme=2).tolist() == [[
        9813864299881775718, 15954449802326014404, 14243877912611034385, 8745725253260428931]]


@pytest.mark.parametrize("scheme", [1, 2])
def test_band_keys_of_one_query_equal_the_batch_path(scheme):
    # a query (one row) takes its own path; it must give the batch path's keys
    from lshdb.hashing.minhash import band_keys

    rng = np.random.default_rng(8)
    for dtype in (np.uint32, np.uint64):
        S = rng.integers(0, 2**31, (40, 128)).astype(dtype)
        batch = band_keys(S, 9, 13, seed=3, scheme=scheme)
        one = np.concatenate([band_keys(S[i : i + 1], 9, 13, seed=3, scheme=scheme)
                              for i in range(40)])
        np.testing.assert_array_equal(batch, one)
        fam = bands_mod.MinHashBands(128, 13, 9, seed=3, scheme=scheme)  # a query's probe
        for i in range(40):
            tables, keys = fam.probe(S[i], 0)
            assert tables.tolist() == list(range(9))
            np.testing.assert_array_equal(keys, batch[i])


@pytest.mark.parametrize("scheme", [1, 2])
def test_band_key_blocks_do_not_change_the_keys(monkeypatch, scheme):
    from lshdb.hashing.minhash import band_keys

    S = np.random.default_rng(9).integers(0, 2**32, (50, 64)).astype(np.uint32)
    whole = band_keys(S, 7, 9, seed=1, scheme=scheme)
    monkeypatch.setattr(bands_mod, "_BAND_BLOCK", 16)  # 2 rows (scheme 1) or 1 row a block
    np.testing.assert_array_equal(band_keys(S, 7, 9, seed=1, scheme=scheme), whole)
    np.testing.assert_array_equal(whole[:3], band_keys(S[:3], 7, 9, seed=1, scheme=scheme))
