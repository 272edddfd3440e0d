"""lshdb.features.BucketFeatures against a plain searchsorted reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lshdb.errors import (
    DimensionMismatchError,
    InvalidParameterError,
    InvalidVectorError,
    LshdbError,
    NotFittedError,
)
from lshdb.features import DEFAULT_BINS, BucketFeatures, uniform_edges
from lshdb.features.buckets import _Lookup


def reference_ids(f: BucketFeatures, X: np.ndarray) -> np.ndarray:
    """The documented layout, one searchsorted per (level, projection)."""
    A = np.asarray(X, dtype=np.float32)
    A = A / np.maximum(np.sqrt(np.einsum("ij,ij->i", A, A)), np.float32(1e-12))[:, None]
    z = A @ f.projection
    cols, offset = [], 0
    for nb, e in zip(f.bins, f.level_edges()):
        for j in range(f.projections):
            cols.append(offset + (nb + 1) * j + np.searchsorted(e[j], z[:, j], side="left"))
        offset += (nb + 1) * f.projections
    return np.stack(cols, axis=1)


def high_dim(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors, spread like sentence embeddings (projections ~ 1/sqrt(dim))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    X = centres[rng.integers(0, 20, n)] + 0.8 * rng.standard_normal((n, dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("edges", ["quantile", "uniform"])
def test_ids_follow_the_documented_layout(edges):
    X = high_dim(3000, dim=48)
    f = BucketFeatures(48, projections=16, edges=edges, seed=3).fit(X[:2000])
    ids = f.transform(X)  # 3000 rows: more than one internal block
    assert ids.dtype == np.int64 and ids.shape == (3000, 16 * len(DEFAULT_BINS))
    assert np.array_equal(ids, reference_ids(f, X))
    assert ids.min() >= 0 and ids.max() < f.n_buckets
    assert f.n_buckets == 16 * sum(nb + 1 for nb in DEFAULT_BINS)
    # every column holds ids of its own level only
    level = f.level_of(ids)
    assert np.array_equal(level, np.repeat(np.arange(len(DEFAULT_BINS)), 16)[None, :]
                          .repeat(len(X), axis=0))


def test_lookup_is_exact_at_and_around_every_edge():
    rng = np.random.default_rng(1)
    edges = [np.sort(rng.uniform(-0.3, 0.3, (4, nb)).astype(np.float32), axis=1)
             for nb in (1, 3, 8, 20)]
    edges[2][1, 3] = edges[1][1, 1]  # an edge shared by two levels
    lookup = _Lookup(edges)
    union = np.unique(np.concatenate([e.ravel() for e in edges]))
    up = np.nextafter(union, np.float32(np.inf))
    down = np.nextafter(union, np.float32(-np.inf))
    values = np.concatenate([union, up, down, [-1, 1, 0, -0.31, 0.31, 1e-30, -1e-30]])
    z = np.tile(values.astype(np.float32)[:, None], (1, 4))
    got = lookup(z)
    for level, e in enumerate(edges):
        for j in range(4):
            assert np.array_equal(got[:, level, j], np.searchsorted(e[j], z[:, j], side="left"))


def test_quantile_edges_use_every_bucket_where_the_uniform_grid_does_not():
    X = high_dim(4000)
    q = BucketFeatures(384, projections=32).fit(X)
    u = BucketFeatures(384, projections=32, edges="uniform")
    for f, expect_full in ((q, True), (u, False)):
        ids = f.transform(X)
        for level, nb in enumerate(f.bins):
            block = ids[:, level * 32 : (level + 1) * 32]
            used = np.array([len(np.unique(block[:, j])) for j in range(32)])
            if expect_full:
                assert (used == nb + 1).all(), (nb, used)
            elif nb in (2, 4):  # spread ~1/sqrt(384): everything falls in the middle bucket
                assert used.max() <= 2, (nb, used)


def test_inputs_of_any_float_dtype_and_scale_and_batch_size():
    X = high_dim(500, dim=32, seed=2)
    f = BucketFeatures(32, projections=8, bins=(2, 5), seed=1).fit(X)
    ref = f.transform(X)
    assert np.array_equal(f.transform(X.astype(np.float64)), ref)
    assert np.array_equal(f.transform(X * 8), ref)  # normalised first (x8 is exact)
    half = X.astype(np.float16)
    assert np.array_equal(f.transform(half), reference_ids(f, half.astype(np.float32)))
    assert f.transform(X[:1]).shape == (1, 16)
    assert f.transform(X[:0]).shape == (0, 16)
    zero = f.transform(np.zeros((1, 32)))  # a zero row projects to 0, as in PyTorch
    e = f.level_edges()
    assert zero[0, 0] == np.searchsorted(e[0][0], 0.0, side="left")


def test_uniform_grid_is_the_published_one():
    for nb in (1, 2, 4, 8, 12, 16, 20, 37):
        expected = np.linspace(-1, 1, nb + 1)[:-1] + 1 / nb
        assert np.allclose(uniform_edges(nb), expected, atol=1e-6)
        assert uniform_edges(nb).dtype == np.float32
    f = BucketFeatures(16, projections=4, bins=(3, 8), edges="uniform")
    assert all(np.array_equal(e, np.tile(uniform_edges(nb), (4, 1)))
               for nb, e in zip((3, 8), f.level_edges()))


def test_projection_is_unit_norm_seeded_and_can_be_given():
    f = BucketFeatures(20, projections=6, seed=5)
    P = f.projection
    assert P.shape == (20, 6) and P.dtype == np.float32
    assert np.allclose(np.linalg.norm(P, axis=0), 1, atol=1e-6)
    assert np.array_equal(P, BucketFeatures(20, projections=6, seed=5).projection)
    assert not np.array_equal(P, BucketFeatures(20, projections=6, seed=6).projection)
    P[0, 0] = 99  # a copy
    assert f.projection[0, 0] != 99
    g = BucketFeatures(20, projections=6, projection=3 * P)
    assert np.allclose(np.linalg.norm(g.projection, axis=0), 1, atol=1e-6)


@pytest.mark.parametrize("edges", ["quantile", "uniform"])
def test_round_trip_through_json(edges):
    X = high_dim(600, dim=24, seed=4)
    f = BucketFeatures(24, projections=10, bins=(1, 4, 9), edges=edges, seed=9).fit(X)
    g = BucketFeatures.from_dict(json.loads(json.dumps(f.to_dict())))
    assert (g.dim, g.projections, g.bins, g.edges, g.seed) == (24, 10, (1, 4, 9), edges, 9)
    assert np.array_equal(g.projection, f.projection)
    assert np.array_equal(g.transform(X), f.transform(X))
    unfitted = BucketFeatures.from_dict(json.loads(json.dumps(BucketFeatures(24).to_dict())))
    assert not unfitted.fitted
    with pytest.raises(InvalidParameterError, match="format"):
        BucketFeatures.from_dict({"dim": 24})


def test_clear_errors():
    X = high_dim(100, dim=16)
    f = BucketFeatures(16, projections=4)
    with pytest.raises(NotFittedError, match="fit"):
        f.transform(X)
    f.fit(X)
    with pytest.raises(DimensionMismatchError, match="expects 16"):
        f.transform(np.ones((3, 17)))
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InvalidVectorError, match="row 7") as info:
        f.transform(bad)
    assert info.value.row == 7
    with pytest.raises(InvalidVectorError, match="2-D"):
        f.transform(X[0])
    with pytest.raises(InvalidVectorError, match="float"):
        f.transform(np.array([["a"] * 16]))
    with pytest.raises(InvalidVectorError, match="at least 21 rows"):
        BucketFeatures(16).fit(X[:20])
    for bins in [(), (0,), (2, 2), "ab", (1.5,), 7, (5000,)]:
        with pytest.raises(InvalidParameterError, match="bins"):
            BucketFeatures(16, bins=bins)
    with pytest.raises(InvalidParameterError, match="edges"):
        BucketFeatures(16, edges="log")
    with pytest.raises(InvalidParameterError, match="dim"):
        BucketFeatures(0)
    with pytest.raises(InvalidParameterError, match="projection"):
        BucketFeatures(16, projections=4, projection=np.ones((16, 5)))
    assert issubclass(NotFittedError, LshdbError)
