"""Cross-polytope LSH: the rotation, the hash values, persistence, probing and collision rates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lshdb.errors import CorruptIndexError, DimensionMismatchError, InvalidParameterError
from lshdb.hashing.crosspolytope import CrossPolytope, collision_probability, fwht, rotation_dim
from lshdb.hashing.registry import FAMILIES, family_from_params
from lshdb.storage.codec import pack_meta, unpack_meta


def _pairs(n: int, dim: int, cos: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random unit pairs at exactly cosine similarity ``cos``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    z = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z -= (z * x).sum(axis=1, keepdims=True) * x
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return x, cos * x + np.sqrt(1.0 - cos * cos) * z


def _hadamard(n: int) -> np.ndarray:
    H = np.ones((1, 1))
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


# -- the rotation ---------------------------------------------------------------------------


def test_fwht_matches_the_dense_hadamard_matrix_on_any_axis() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5, 32))
    expect = x @ _hadamard(32).T
    np.testing.assert_allclose(fwht(x), expect, atol=1e-12)
    np.testing.assert_allclose(fwht(np.moveaxis(x, 2, 0), axis=0),
                               np.moveaxis(expect, 2, 0), atol=1e-12)
    before = x.copy()
    fwht(x)
    np.testing.assert_array_equal(x, before)  # the input is not used as scratch space
    with pytest.raises(InvalidParameterError):
        fwht(np.ones((2, 12)))


def test_rotation_dim_is_the_next_power_of_two() -> None:
    assert [rotation_dim(d) for d in (1, 2, 3, 64, 65, 100, 128)] == [1, 2, 4, 64, 128, 128, 128]


def test_rotation_is_orthogonal_on_batches() -> None:
    f = CrossPolytope(100, 2, 3, seed=4)
    X = np.random.default_rng(1).standard_normal((20, 100))
    R = f.rotate(X)  # (n, L*k, d')
    assert R.shape == (20, 6, 128)
    gram = X @ X.T
    for j in range(6):
        np.testing.assert_allclose(R[:, j] @ R[:, j].T, gram, rtol=1e-12, atol=1e-10)
    # the six functions really are different rotations
    assert np.abs(R[:, 0] - R[:, 1]).max() > 0.1


def test_hash_values_are_the_closest_signed_vertex_of_the_rotation() -> None:
    f = CrossPolytope(50, 2, 4, seed=2)
    X = np.random.default_rng(3).standard_normal((200, 50)).astype(np.float32)
    R = f.rotate(X)
    i = np.abs(R).argmax(axis=2)
    neg = np.take_along_axis(R, i[:, :, None], axis=2)[:, :, 0] < 0
    expect = (i + 64 * neg).reshape(200, 4, 2)
    np.testing.assert_array_equal(f.values(X), expect)


# -- hash values, determinism, persistence ------------------------------------------------------


@pytest.mark.parametrize("dim,k,L,last", [(64, 2, 5, None), (100, 1, 3, 16), (30, 11, 2, 3)])
def test_values_in_range_deterministic_and_round_trip(dim: int, k: int, L: int,
                                                       last: int | None) -> None:
    f = CrossPolytope(dim, k, L, seed=7, last_cp_dim=last)
    X = np.random.default_rng(5).standard_normal((300, dim)).astype(np.float32)
    V = f.values(X)
    c = np.full(k, f.rotation_dim)
    c[-1] = f.last_cp_dim
    assert V.shape == (300, L, k) and V.min() >= 0 and (V < 2 * c).all()
    assert len(np.unique(V[:, 0, 0])) > 1
    H = f.hash(X)
    assert H.dtype == np.uint64 and H.shape == (300, L)
    np.testing.assert_array_equal(H, f.hash(X))
    np.testing.assert_array_equal(H, CrossPolytope(dim, k, L, seed=7, last_cp_dim=last).hash(X))
    assert not np.array_equal(H, CrossPolytope(dim, k, L, seed=8, last_cp_dim=last).hash(X))
    stored = unpack_meta(pack_meta(f.params()), "family")  # through the real meta bytes
    g = family_from_params(dim, stored)
    assert isinstance(g, CrossPolytope) and g.describe() == f.describe()
    np.testing.assert_array_equal(g.hash(X), H)
    if f.key_bits <= 64:  # packed keys: the key is the tuple of values, function 0 lowest
        shifts = np.concatenate([[0], np.cumsum(f.bits)[:-1]]).astype(np.uint64)
        packed = (V.astype(np.uint64) << shifts).sum(axis=2, dtype=np.uint64)
        np.testing.assert_array_equal(H, packed)


def test_registered_under_its_name() -> None:
    assert FAMILIES["crosspolytope"] is CrossPolytope
    assert CrossPolytope.metric == "cosine"


def test_hash_is_exactly_invariant_to_power_of_two_scaling_and_float64_input() -> None:
    f = CrossPolytope(40, 2, 3, seed=1)
    X = np.random.default_rng(2).standard_normal((100, 40)).astype(np.float32)
    H = f.hash(X)
    np.testing.assert_array_equal(f.hash(X.astype(np.float64)), H)
    np.testing.assert_array_equal(f.hash(X.astype(np.float64) * 2.0**200), H)  # no overflow
    np.testing.assert_array_equal(f.hash(X * np.float32(2.0**-60)), H)
    assert (f.hash(X * np.float32(3.7)) == H).mean() > 0.99  # scale-free up to rounding


def test_batch_hashing_equals_per_vector_hashing_and_probe_homes() -> None:
    f = CrossPolytope(64, 2, 4, seed=3)  # 8 functions x 64: ~512 rows per internal block
    X = np.random.default_rng(4).standard_normal((1200, 64)).astype(np.float32)
    H = f.hash(X)
    for i in range(0, 1200, 97):
        np.testing.assert_array_equal(f.hash(X[i : i + 1])[0], H[i])
        tables, keys = f.probe(X[i], 4)
        np.testing.assert_array_equal(tables, np.arange(4))
        np.testing.assert_array_equal(keys, H[i])


def test_corrupt_or_invalid_parameters_are_rejected() -> None:
    f = CrossPolytope(20, 2, 3, seed=0)
    p = f.params()
    bad_shape = {**p, "signs": {**p["signs"], "shape": [6, 3, 16]}}
    with pytest.raises(CorruptIndexError):
        family_from_params(20, bad_shape)
    zeros = {**p, "signs": {**p["signs"], "data": bytes(len(p["signs"]["data"]))}}
    with pytest.raises(CorruptIndexError):
        family_from_params(20, zeros)
    with pytest.raises(CorruptIndexError):
        family_from_params(20, {**p, "last_cp_dim": 64})
    with pytest.raises(CorruptIndexError):
        family_from_params(20, {k: v for k, v in p.items() if k != "signs"})
    with pytest.raises(CorruptIndexError):
        family_from_params(40, p)  # stored for dim 20 (d' 32), opened as dim 40 (d' 64)
    with pytest.raises(InvalidParameterError):
        CrossPolytope(0, 1, 1)
    with pytest.raises(InvalidParameterError):
        CrossPolytope(20, 1, 1, last_cp_dim=33)
    with pytest.raises(DimensionMismatchError):
        f.hash(np.ones((2, 21)))
    with pytest.raises(DimensionMismatchError):
        f.probe(np.ones((2, 20)), 10)


# -- collision probabilities -------------------------------------------------------------------


def test_collision_rate_falls_with_angle_and_matches_the_estimate() -> None:
    f = CrossPolytope(64, 1, 50, seed=5)  # 50 independent functions
    cosines = [0.3, 0.6, 0.8, 0.95]
    est = collision_probability(cosines, 64, samples=4000, seed=2)
    haar = collision_probability(cosines, 64, samples=4000, seed=2, rotation="haar")
    assert isinstance(est, np.ndarray) and est.shape == (4,)
    emp = []
    for i, c in enumerate(cosines):
        x, y = _pairs(300, 64, c, seed=10 + i)
        emp.append(float((f.values(x) == f.values(y)).mean()))
    assert all(a < b for a, b in zip(emp, emp[1:]))
    assert all(a < b for a, b in zip(est, est[1:]))
    np.testing.assert_allclose(emp, est, atol=0.04)
    np.testing.assert_allclose(haar, est, atol=0.04)  # Hadamard rotations behave like Haar
    assert collision_probability(1.0, 64, samples=500) == 1.0
    assert collision_probability(-1.0, 64, samples=500) == 0.0


def test_more_selective_per_bit_than_hyperplanes() -> None:
    # one function is log2(2d') = 7 bits at d' = 64; the same bits of SimHash collide less
    for c in (0.6, 0.8, 0.9):
        p_cp = collision_probability(c, 64, samples=4000, seed=1)
        p_hp = (1.0 - np.arccos(c) / np.pi) ** 7
        assert p_cp > 1.2 * p_hp


def test_collision_probability_rejects_bad_input() -> None:
    with pytest.raises(InvalidParameterError):
        collision_probability(1.5, 64)
    with pytest.raises(InvalidParameterError):
        collision_probability(0.5, 64, samples=0)
    with pytest.raises(InvalidParameterError):
        collision_probability(0.5, 64, rotation="gaussian")


# -- probing -------------------------------------------------------------------------------------


def _all_perturbation_costs(f: CrossPolytope, x: np.ndarray) -> dict[tuple[int, int], float]:
    """Brute force: every (table, key) with FALCONN's summed squared-gap cost."""
    u = f.rotate(x[None])[0] / np.linalg.norm(x)
    out = {}
    for t in range(f.L):
        lists = []
        for j in range(f.k):
            c = int(f.last_cp_dim if j == f.k - 1 else f.rotation_dim)
            v = u[t * f.k + j, :c]
            top = np.abs(v).max()
            lists.append([(i, (top - v[i]) ** 2) for i in range(c)]
                         + [(i + c, (top + v[i]) ** 2) for i in range(c)])
        for combo in itertools.product(*lists):
            key = int(f.combine(np.array([val for val, _ in combo])))
            out[(t, key)] = float(sum(cost for _, cost in combo))
    return out


@pytest.mark.parametrize("dim,k,L,last", [(8, 2, 3, None), (6, 3, 2, None), (16, 2, 2, 4)])
def test_probe_sequence_is_the_exact_cheapest_first_order(dim: int, k: int, L: int,
                                                          last: int | None) -> None:
    f = CrossPolytope(dim, k, L, seed=3, last_cp_dim=last)
    rng = np.random.default_rng(dim)
    for _ in range(3):
        x = rng.standard_normal(dim)
        costs = _all_perturbation_costs(f, x)
        tables, keys = f.probe(x, len(costs) + 10)
        assert len(tables) == len(costs)  # every bucket of every table, none twice
        np.testing.assert_array_equal(tables[:L], np.arange(L))
        np.testing.assert_array_equal(keys[:L], f.hash(x[None])[0])
        got = [costs[(t, key)] for t, key in zip(tables.tolist(), keys.tolist())]
        assert np.all(np.diff(got[L:]) >= -1e-6)  # scores are float32 rotations
        ref = sorted(costs.values())
        for n in (L + 1, L + 5, len(costs) // 3):
            t2, k2 = f.probe(x, n)
            assert len(t2) == n
            np.testing.assert_allclose(sorted(costs[(a, b)] for a, b in
                                              zip(t2.tolist(), k2.tolist())), ref[:n], rtol=1e-5)


def test_probe_on_a_realistic_shape_is_distinct_and_runs_out_honestly() -> None:
    f = CrossPolytope(128, 3, 6, seed=2)
    x = np.random.default_rng(0).standard_normal(128)
    tables, keys = f.probe(x, 300)
    assert len(tables) == 300 and tables.dtype.kind == "i" and keys.dtype == np.uint64
    assert len(set(zip(tables.tolist(), keys.tolist()))) == 300
    one = CrossPolytope(16, 1, 2, seed=0)  # 32 buckets per table, 64 in all
    tables, keys = one.probe(np.arange(16.0), 1000)
    assert len(tables) == 64 and len(set(zip(tables.tolist(), keys.tolist()))) == 64


def test_multiprobe_finds_neighbours_at_cosine_08() -> None:
    f = CrossPolytope(64, 2, 4, seed=1)
    x, y = _pairs(250, 64, 0.8, seed=3)
    Hy = f.hash(y)
    found = {}
    for T in (4, 16, 64):
        hits = 0
        for i in range(len(x)):
            tables, keys = f.probe(x[i], T)
            hits += bool((keys == Hy[i][tables]).any())
        found[T] = hits / len(x)
    assert found[4] < found[16] < found[64]
    assert found[64] > found[4] + 0.3, found
