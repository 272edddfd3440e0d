"""lshdb.features.torch against the published module, pasted here as the reference."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lshdb.errors import DimensionMismatchError, InvalidParameterError, NotFittedError
from lshdb.features import BucketFeatures, uniform_edges
from lshdb.features.torch import CascadeEmbedding, CosineVectorEmbedding


class SeedCosineVectorEmbedding(nn.Module):
    """The module as published (the reference; not lshdb code)."""

    def __init__(self, inp_dim, emb_dim, n_proj=16, num_bins=20):
        super().__init__()
        self.register_buffer('projection_mat',
            F.normalize(torch.randn((inp_dim, n_proj)), p=2.0, dim=0), persistent=True)
        resolution = 2.0 / num_bins
        self.register_buffer('grid',
            torch.linspace(-1, 1, num_bins + 1)[:-1] + 0.5 * resolution, persistent=True)
        self.register_buffer('pos_offset',
            ((num_bins + 1) * torch.arange(0, n_proj, dtype=torch.long)).long().reshape(-1, 1, 1),
            persistent=True)
        self.emb = nn.EmbeddingBag((num_bins + 1) * n_proj, emb_dim)
        self.emb_dim, self.n_proj = emb_dim, n_proj

    def forward(self, x):
        bs, seq_len, emb_dim = x.size()
        z = F.normalize(x, p=2.0, dim=-1) @ self.projection_mat
        z = torch.bucketize(z, self.grid).transpose(0, -1)
        z = (z + self.pos_offset).transpose(0, -1).contiguous()
        return self.emb(z.view(-1, self.n_proj)).reshape(bs, seq_len, self.emb_dim)

    def ids(self, x):  # the forward pass up to the EmbeddingBag
        z = F.normalize(x, p=2.0, dim=-1) @ self.projection_mat
        z = torch.bucketize(z, self.grid).transpose(0, -1)
        return (z + self.pos_offset).transpose(0, -1).contiguous()


BINS = (1, 2, 4, 8, 12, 16, 20)


def inputs(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, dim))
    return (centres[rng.integers(0, 10, n)] + 0.7 * rng.standard_normal((n, dim))
            ).astype(np.float32)


def test_uniform_ids_equal_the_seed_modules_on_the_same_projection():
    torch.manual_seed(0)
    X = inputs(2000, 32)
    seeds = [SeedCosineVectorEmbedding(32, 8, n_proj=16, num_bins=nb) for nb in BINS]
    P = seeds[0].projection_mat
    for s in seeds:
        s.projection_mat.copy_(P)
    f = BucketFeatures(32, projections=16, bins=BINS, edges="uniform", projection=P.numpy())
    ids = f.transform(X)
    x = torch.from_numpy(X).reshape(40, 50, 32)  # (batch, seq_len, dim) as the seed takes
    offset = 0
    for level, (nb, s) in enumerate(zip(BINS, seeds)):
        assert np.array_equal(s.grid.numpy(), uniform_edges(nb))
        seed_ids = s.ids(x).reshape(2000, 16).numpy()
        assert np.array_equal(ids[:, level * 16 : (level + 1) * 16] - offset, seed_ids), nb
        offset += (nb + 1) * 16


def test_a_seed_checkpoint_loads_and_gives_the_same_output():
    torch.manual_seed(1)
    seed = SeedCosineVectorEmbedding(24, 6, n_proj=12, num_bins=20)
    buf = io.BytesIO()
    torch.save(seed.state_dict(), buf)
    buf.seek(0)
    mine = CosineVectorEmbedding(24, 6, n_proj=12, num_bins=20)
    mine.load_state_dict(torch.load(buf))
    assert set(mine.state_dict()) == set(seed.state_dict())
    x = torch.from_numpy(inputs(60, 24, seed=2)).reshape(3, 20, 24)
    out = mine(x)
    assert out.shape == (3, 20, 6)
    assert torch.equal(out, seed(x))
    assert torch.equal(mine.ids(x), seed.ids(x))


@pytest.mark.parametrize("edges", ["quantile", "uniform"])
def test_cascade_from_features_gives_the_same_ids(edges):
    X = inputs(1500, 48, seed=3)
    f = BucketFeatures(48, projections=20, edges=edges, seed=4).fit(X[:1000])
    layer = CascadeEmbedding.from_features(f, emb_dim=16)
    got = layer.ids(torch.from_numpy(X)).numpy()
    assert np.array_equal(got, f.transform(X))
    assert layer.n_buckets == f.n_buckets
    # the same output from vectors and from ids computed in numpy
    y1 = layer(torch.from_numpy(X[:10]))
    y2 = layer.embed_ids(torch.from_numpy(f.transform(X[:10])))
    assert y1.shape == (10, 16) and torch.allclose(y1, y2)
    # leading dimensions are kept
    assert layer(torch.from_numpy(X[:12]).reshape(3, 4, 48)).shape == (3, 4, 16)


def test_cascade_is_the_sum_of_its_levels():
    torch.manual_seed(5)
    layer = CascadeEmbedding(16, 4, n_proj=6, num_bins=(2, 5))
    x = torch.from_numpy(inputs(7, 16, seed=6))
    singles = []
    for level, nb in enumerate((2, 5)):
        one = CosineVectorEmbedding(16, 4, n_proj=6, num_bins=nb)
        one.projection_mat.copy_(layer.projection_mat)
        start = 6 * sum(b + 1 for b in (2, 5)[:level])
        one.emb.weight.data.copy_(layer.emb.weight.data[start : start + 6 * (nb + 1)])
        singles.append(one(x[None])[0])
    assert torch.allclose(layer(x), singles[0] + singles[1], atol=1e-6)


def test_gradients_reach_the_embeddings_of_the_ids_used():
    X = inputs(300, 32, seed=7)
    f = BucketFeatures(32, projections=8, bins=(2, 6)).fit(X)
    layer = CascadeEmbedding.from_features(f, emb_dim=5)
    head = nn.Linear(5, 1)
    loss = head(layer(torch.from_numpy(X[:50]))).pow(2).mean()
    loss.backward()
    grad = layer.emb.weight.grad
    used = np.unique(f.transform(X[:50]))
    nonzero = torch.nonzero(grad.abs().sum(dim=1)).flatten().numpy()
    assert np.array_equal(nonzero, used)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_saved_with_the_model_and_with_json():
    X = inputs(400, 20, seed=8)
    f = BucketFeatures(20, projections=6, bins=(3, 9), seed=2).fit(X)
    layer = CascadeEmbedding.from_features(f, emb_dim=4)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = CascadeEmbedding(20, 4, n_proj=6, num_bins=(3, 9))  # uniform until loaded
    fresh.load_state_dict(torch.load(buf))
    x = torch.from_numpy(X)
    assert torch.equal(fresh.ids(x), layer.ids(x))
    assert torch.equal(fresh(x), layer(x))
    g = BucketFeatures.from_dict(json.loads(json.dumps(f.to_dict())))
    assert np.array_equal(CascadeEmbedding.from_features(g, 4).ids(x).numpy(), f.transform(X))


def test_torch_errors():
    with pytest.raises(NotFittedError):
        CascadeEmbedding.from_features(BucketFeatures(8), emb_dim=4)
    with pytest.raises(InvalidParameterError, match="edges"):
        CascadeEmbedding(8, 4, n_proj=3, num_bins=(2,), edges="quantile")
    with pytest.raises(InvalidParameterError, match="shapes"):
        CascadeEmbedding(8, 4, n_proj=3, num_bins=(2,), edges=[np.zeros((3, 3))])
    with pytest.raises(InvalidParameterError, match="bins"):
        CosineVectorEmbedding(8, 4, num_bins=0)
    layer = CascadeEmbedding(8, 4, n_proj=3, num_bins=(2,))
    with pytest.raises(DimensionMismatchError, match="expected 8"):
        layer(torch.ones(2, 9))
    with pytest.raises(DimensionMismatchError, match="columns"):
        layer.embed_ids(torch.zeros(2, 4, dtype=torch.long))
