"""PyTorch input layers that embed LSH bucket ids (the optional extra ``lshdb[torch]``).

- :class:`CosineVectorEmbedding`: the published one-level module, with its buffers,
  arguments and output shape, so a checkpoint of the original loads into it.
- :class:`CascadeEmbedding`: several levels summed, on the uniform grid or on edges
  fitted by :class:`lshdb.features.BucketFeatures` (:meth:`CascadeEmbedding.from_features`
  gives the same ids, so a model trained on ids computed in numpy runs on vectors here).

The projection matrix and the edges are persistent buffers: saving the model's
``state_dict`` saves the featuriser with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError
from .buckets import DEFAULT_BINS, BucketFeatures, _check_bins, _check_int, uniform_edges

__all__ = ["CosineVectorEmbedding", "CascadeEmbedding"]


class CosineVectorEmbedding(nn.Module):
    """One resolution: ``n_proj`` projections bucketised on the uniform grid of
    ``num_bins`` bins, one learned embedding per (projection, bucket), averaged.

    Input ``(batch, seq_len, inp_dim)``, output ``(batch, seq_len, emb_dim)`` (any number
    of leading dimensions works). Buffers ``projection_mat``, ``grid`` and ``pos_offset``
    and the ``emb`` EmbeddingBag are those of the published module.
    """

    projection_mat: torch.Tensor
    grid: torch.Tensor
    pos_offset: torch.Tensor

    def __init__(self, inp_dim: int, emb_dim: int, n_proj: int = 16, num_bins: int = 20) -> None:
        super().__init__()
        inp_dim = _check_int("inp_dim", inp_dim, 1, 1 << 20)
        emb_dim = _check_int("emb_dim", emb_dim, 1, 1 << 20)
        n_proj = _check_int("n_proj", n_proj, 1, 1 << 16)
        num_bins = _check_bins((num_bins,))[0]
        self.register_buffer(
            "projection_mat",
            F.normalize(torch.randn((inp_dim, n_proj)), p=2.0, dim=0), persistent=True)
        resolution = 2.0 / num_bins
        self.register_buffer(
            "grid", torch.linspace(-1, 1, num_bins + 1)[:-1] + 0.5 * resolution, persistent=True)
        self.register_buffer(
            "pos_offset",
            ((num_bins + 1) * torch.arange(0, n_proj, dtype=torch.long)).reshape(-1, 1, 1),
            persistent=True)
        self.emb = nn.EmbeddingBag((num_bins + 1) * n_proj, emb_dim)
        self.inp_dim, self.emb_dim, self.n_proj, self.num_bins = inp_dim, emb_dim, n_proj, num_bins

    def ids(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(..., n_proj)`` bucket ids of ``x`` (``(num_bins + 1) * j + bucket``)."""
        _check_input(x, self.inp_dim)
        z = F.normalize(x, p=2.0, dim=-1) @ self.projection_mat
        return torch.bucketize(z, self.grid) + self.pos_offset.reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.ids(x)
        return self.emb(ids.reshape(-1, self.n_proj)).reshape(*x.shape[:-1], self.emb_dim)


class CascadeEmbedding(nn.Module):
    """Several resolutions summed: the mean embedding of each level's ``n_proj`` ids,
    added over the levels (the sum of one :class:`CosineVectorEmbedding` per level with a
    shared projection matrix).

    Parameters
    ----------
    inp_dim, emb_dim, n_proj : int
        Input dimension, output dimension, random projections.
    num_bins : sequence of int
        Bins per level (``nb`` edges, ``nb + 1`` buckets each).
    edges : "uniform" or list of arrays
        ``"uniform"``: the published grid over [-1, 1]. Or one ``(n_proj, nb)`` array of
        strictly increasing edges per level (what :meth:`BucketFeatures.level_edges`
        returns). A checkpoint's buffers replace both on ``load_state_dict``.
    projection : array of shape (inp_dim, n_proj), optional
        The projection matrix; by default drawn with ``torch.randn`` and normalised.

    The ids (:meth:`ids`) follow :class:`~lshdb.features.BucketFeatures`' column layout.
    """

    projection_mat: torch.Tensor
    offsets: torch.Tensor

    def __init__(self, inp_dim: int, emb_dim: int, n_proj: int,
                 num_bins: Sequence[int] = DEFAULT_BINS, edges: Any = "uniform",
                 projection: Any = None) -> None:
        super().__init__()
        inp_dim = _check_int("inp_dim", inp_dim, 1, 1 << 20)
        emb_dim = _check_int("emb_dim", emb_dim, 1, 1 << 20)
        n_proj = _check_int("n_proj", n_proj, 1, 1 << 16)
        bins = _check_bins(num_bins)
        if isinstance(edges, str):
            if edges != "uniform":
                raise InvalidParameterError(
                    f'edges must be "uniform" or a list of per-level (n_proj, nb) arrays; found '
                    f'{edges!r} (fit quantile edges with BucketFeatures, then use from_features)')
            level_edges = [np.tile(uniform_edges(nb), (n_proj, 1)) for nb in bins]
        else:
            level_edges = [np.asarray(e, dtype=np.float32) for e in edges]
            shapes = [(n_proj, nb) for nb in bins]
            if [e.shape for e in level_edges] != shapes:
                raise InvalidParameterError(
                    f"edges have shapes {[e.shape for e in level_edges]}; expected {shapes}")
            for e in level_edges:
                if not np.isfinite(e).all() or (np.diff(e, axis=1) <= 0).any():
                    raise InvalidParameterError("edges must be finite and strictly increasing")
        if projection is None:
            P = F.normalize(torch.randn((inp_dim, n_proj)), p=2.0, dim=0)
        else:
            P = torch.as_tensor(np.asarray(projection, dtype=np.float32))
            if tuple(P.shape) != (inp_dim, n_proj):
                raise InvalidParameterError(
                    f"projection has shape {tuple(P.shape)}; expected ({inp_dim}, {n_proj})")
        self.register_buffer("projection_mat", P.clone(), persistent=True)
        for level, e in enumerate(level_edges):
            self.register_buffer(f"edges_{level}", torch.from_numpy(e.copy()), persistent=True)
        sizes = [(nb + 1) * n_proj for nb in bins]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(
            np.stack([o + (nb + 1) * np.arange(n_proj) for o, nb in zip(offsets, bins)]),
            dtype=torch.long), persistent=True)
        self.n_buckets = int(sum(sizes))
        self.emb = nn.EmbeddingBag(self.n_buckets, emb_dim, mode="sum")
        self.inp_dim, self.emb_dim, self.n_proj, self.num_bins = inp_dim, emb_dim, n_proj, bins

    @classmethod
    def from_features(cls, features: BucketFeatures, emb_dim: int) -> CascadeEmbedding:
        """A cascade with the projection and edges of a fitted ``features`` (same ids).

        Raises
        ------
        NotFittedError
            ``features`` uses quantile edges and has not been fitted.
        """
        return cls(features.dim, emb_dim, features.projections, features.bins,
                   edges=features.level_edges(), projection=features.projection)

    def ids(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(..., n_proj * levels)`` int64 ids of ``x``, as
        :meth:`BucketFeatures.transform` lays them out."""
        _check_input(x, self.inp_dim)
        z = F.normalize(x.float(), p=2.0, dim=-1) @ self.projection_mat
        zt = z.reshape(-1, self.n_proj).T.contiguous()  # (n_proj, rows)
        levels = [torch.searchsorted(getattr(self, f"edges_{level}"), zt).T
                  for level in range(len(self.num_bins))]
        ids = torch.stack(levels, dim=1) + self.offsets  # (rows, levels, n_proj)
        return ids.reshape(*x.shape[:-1], len(self.num_bins) * self.n_proj)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The layer's output for precomputed ids (e.g. from :meth:`BucketFeatures.transform`):
        ``(..., n_proj * levels)`` int64 in, ``(..., emb_dim)`` out."""
        width = len(self.num_bins) * self.n_proj
        if ids.shape[-1] != width:
            raise DimensionMismatchError(
                f"ids have {ids.shape[-1]} columns; this layer expects {width} "
                f"({self.n_proj} projections x {len(self.num_bins)} levels)")
        out = self.emb(ids.reshape(-1, width).long()) / self.n_proj
        return out.reshape(*ids.shape[:-1], self.emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_ids(self.ids(x))


def _check_input(x: torch.Tensor, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidVectorError(
            f"input must be a floating-point tensor (..., {dim}); found "
            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise DimensionMismatchError(
            f"input has last dimension {x.shape[-1] if x.dim() else None}; expected {dim}")
