"""Theory: the figures of DESIGN §1 exactly, and each family's empirical collision rate
against its formula within a stated statistical tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lshdb import theory
from lshdb.hashing.families import BitSample, Hyperplane, Projection, PStable, Unary


def test_or_then_and_figures():
    steps = [("or", 4), ("and", 8)]
    assert theory.compose(0.4, steps) == pytest.approx(0.329, abs=5e-4)
    assert theory.compose(0.8, steps) == pytest.approx(0.987, abs=5e-4)
    assert theory.compose(0.2, steps) == pytest.approx(0.0148, abs=5e-5)


def test_and_or_is_the_s_curve():
    p = np.linspace(0, 1, 11)
    np.testing.assert_allclose(theory.compose(p, [("and", 5), ("or", 20)]),
                               theory.s_curve(p, 5, 20))
    assert theory.sensitivity(0.8, 0.4, [("and", 4), ("or", 8)]) == pytest.approx(
        (1 - (1 - 0.8**4) ** 8, 1 - (1 - 0.4**4) ** 8))
    # nested deeper: AND-OR-AND
    assert theory.compose(0.7, [("and", 2), ("or", 3), ("and", 2)]) == pytest.approx(
        (1 - (1 - 0.49) ** 3) ** 2)


def test_optimal_bands_agrees_with_datasketch():
    assert theory.optimal_bands(0.9, 128) == (5, 25)
    assert theory.optimal_bands(0.7, 250) == (25, 10)
    assert theory.band_threshold(20, 5) == pytest.approx((1 / 20) ** (1 / 5))
    with pytest.raises(ValueError, match="threshold"):
        theory.optimal_bands(0, 128)


def test_collision_formulas_at_known_points():
    assert theory.p_hyperplane(0.0) == pytest.approx(0.5)
    assert theory.p_hyperplane(1.0) == 1.0
    assert theory.p_gaussian(1.0) == pytest.approx(0.3687, abs=1e-4)  # Datar et al. r = c
    assert theory.p_cauchy(1.0) == pytest.approx(0.5 - math.log(2) / math.pi, abs=1e-9)
    assert theory.p_bitsample(16, 64) == 0.75
    assert theory.p_unary(10, 4, 10) == 0.75


def empirical(hits: np.ndarray) -> tuple[float, float]:
    """Mean collision rate of (pairs, functions) hits, and a tolerance of 5 standard errors.

    Functions are the independent units (each pair is hashed by every function), so the
    standard error comes from the spread of the per-function rates.
    """
    per_function = hits.mean(axis=0)
    se = per_function.std(ddof=1) / math.sqrt(len(per_function))
    return float(per_function.mean()), 5 * max(se, 1e-3)


@pytest.mark.parametrize("cos", [0.1, 0.5, 0.9])
def test_hyperplane_rate(cos):
    rng = np.random.default_rng(1)
    d, n = 32, 4000
    x = rng.standard_normal((n, d))
    u = rng.standard_normal((n, d))
    u -= (u * x).sum(1, keepdims=True) / (x * x).sum(1, keepdims=True) * x
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    y = cos * x + math.sqrt(1 - cos**2) * u  # exact cosine similarity cos
    fam = Hyperplane(d, 1, 64, seed=2)
    p, tol = empirical(fam.hash(x.astype(np.float32)) == fam.hash(y.astype(np.float32)))
    assert abs(p - theory.p_hyperplane(cos)) < tol


@pytest.mark.parametrize("dist, c", [("gaussian", 0.5), ("gaussian", 2.0), ("cauchy", 0.5),
                                     ("cauchy", 2.0)])
def test_pstable_rate(dist, c):
    rng = np.random.default_rng(3)
    d, n, w = 16, 500, 4.0
    x = rng.standard_normal((n, d)) * 5
    step = rng.standard_normal((n, d))
    norm = np.abs(step).sum(1) if dist == "cauchy" else np.linalg.norm(step, axis=1)
    y = x + step / norm[:, None] * (c * w)  # distance exactly c * w in the family's norm
    fam = PStable(d, 1, 1000, w, seed=4, distribution=dist)
    p, tol = empirical(fam.hash(x.astype(np.float32)) == fam.hash(y.astype(np.float32)))
    f = theory.p_gaussian if dist == "gaussian" else theory.p_cauchy
    assert abs(p - f(c)) < tol


def test_bitsample_and_unary_rates():
    rng = np.random.default_rng(5)
    n, D = 3000, 256
    a = rng.integers(0, 2, (n, D), dtype=np.uint8)
    b = a.copy()
    flip = rng.random((n, D)) < 0.2
    b[flip] ^= 1
    fam = BitSample(D, 1, 64, seed=6)
    hits = fam.hash(np.packbits(a, axis=1)) == fam.hash(np.packbits(b, axis=1))
    p, tol = empirical(hits)
    assert abs(p - float(np.mean(1 - flip.sum(1) / D))) < tol
    C, dim = 10, 8
    u = rng.integers(0, C + 1, (n, dim))
    v = np.clip(u + rng.integers(-2, 3, (n, dim)), 0, C)
    fam = Unary(dim, 1, 64, C, seed=7)
    p, tol = empirical(fam.hash(u.astype(np.float32)) == fam.hash(v.astype(np.float32)))
    expect = float(np.mean(1 - np.abs(u - v).sum(1) / (dim * C)))
    assert abs(p - expect) < tol


@pytest.mark.parametrize("make", [
    lambda: Hyperplane(128, 16, 16, seed=3),
    lambda: PStable(128, 8, 32, w=0.5, seed=3),
    lambda: PStable(128, 8, 32, w=0.5, seed=3, distribution="cauchy"),
], ids=["hyperplane", "gaussian", "cauchy"])
def test_a_rows_buckets_do_not_depend_on_its_batch(make):
    # BLAS sums in shape-dependent orders; float32 projections moved ~1 value in 10^5 across
    # a bucket boundary, which the deep check reported as an id in the wrong bucket
    fam = make()
    X = np.random.default_rng(4).standard_normal((6000, 128)).astype(np.float32)
    whole = fam.hash(X)
    alone = np.concatenate([fam.hash(X[i : i + 1]) for i in range(len(X))])
    odd = np.concatenate([fam.hash(X[s : s + 7]) for s in range(0, len(X), 7)])
    assert np.array_equal(whole, alone)
    assert np.array_equal(whole, odd)



def _near_boundaries(A: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows each within ~1e-6 of a boundary of one column of ``X @ A + b``: 0 when b is 0,
    else an integer."""
    X = rng.standard_normal((4000, 128)).astype(np.float32)
    for i in range(len(X)):
        c = i % A.shape[1]
        a = A[:, c].astype(np.float64)
        edge = 0.0 if not b.any() else round(float(X[i] @ a + b[c]))
        target = edge - b[c] + rng.uniform(-1e-6, 1e-6)
        X[i] = (X[i] + (target - X[i] @ a) * a / (a @ a)).astype(np.float32)
    return X


@pytest.mark.parametrize("offset", [False, True], ids=["signs", "floors"])
def test_float32_projection_decides_like_float64_next_to_the_boundary(offset):
    # the float32 product puts many of these rows on the wrong side; the rechecked
    # decision must match float64 wherever float64 itself is clear of the boundary
    rng = np.random.default_rng(5)
    A = rng.standard_normal((128, 64)).astype(np.float32)
    b = rng.uniform(0.0, 1.0, 64) if offset else np.zeros(64)
    X = _near_boundaries(A, b, rng)
    ref = X.astype(np.float64) @ A.astype(np.float64) + b
    clear = np.abs(ref - np.round(ref) if offset else ref) > 1e-12
    P = Projection(A, b if offset else None)
    if offset:
        want, got = np.floor(ref), P.floors(X)
        fast = np.floor((X @ A).astype(np.float64) + b)
    else:
        want, got = ref > 0, P.signs(X)
        fast = (X @ A) > 0
    assert (fast != want)[clear].sum() > 10  # float32 alone is not enough here
    assert np.array_equal(got[clear], want[clear])
    one = P.floors if offset else P.signs  # a query alone takes a scalar path
    alone = np.concatenate([one(X[i : i + 1]) for i in range(len(X))])
    assert np.array_equal(alone, got)
    if not offset:  # a code's query: one matrix-vector product, the same decisions
        assert np.array_equal(np.stack([P.signs_one(x) for x in X]), got)


@pytest.mark.parametrize("k", [1, 7, 24, 25, 52, 53, 64])
def test_bit_keys_equal_packed_bits_at_every_width(k):
    # keys up to 24 bits come from a float32 product, up to 52 from float64, wider ones
    # from packbits: all three must give bit j of table t's key = function j of table t
    L, n = 3, 500
    bits = np.random.default_rng(k).random((n, L * k)) < 0.5
    fam = BitSample(8 * 64, k, L, seed=1)
    got = fam._keys_from_bits(bits)
    want = np.zeros((n, L), dtype=np.uint64)
    for t in range(L):
        for j in range(k):
            want[:, t] |= bits[:, t * k + j].astype(np.uint64) << np.uint64(j)
    assert np.array_equal(got, want)
