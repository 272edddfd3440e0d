"""Multi-resolution LSH bucket ids of vectors, as features for a model (numpy only).

Each row is L2-normalised and projected onto ``projections`` random unit directions; each
projection is bucketised at several resolutions (``bins``), and every (level, projection,
bucket) gets one id in a shared vocabulary of ``n_buckets`` ids. A learned embedding per
id, summed, is the model's input layer (:mod:`lshdb.features.torch`).

Column layout of :meth:`BucketFeatures.transform`: levels in the order of ``bins``, then
projections. For level ``l`` with ``nb`` bins and projection ``j`` the id is
``offset_l + (nb + 1) * j + bucket``, where ``offset_l`` sums ``(nb + 1) * projections``
over the earlier levels and ``bucket = searchsorted(edges, z, side="left")`` (what
``torch.bucketize(z, edges)`` returns): ``nb`` edges make ``nb + 1`` buckets.

``edges="uniform"`` is the published grid over [-1, 1] (the same float32 values as the
PyTorch original); ``edges="quantile"`` (the default) places each projection's edges at
quantiles of the data given to :meth:`~BucketFeatures.fit`, so every bucket is used.

Thread safety: a fitted instance is read-only in :meth:`~BucketFeatures.transform` and may
be shared between threads; :meth:`~BucketFeatures.fit` must not run concurrently with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import (
    DimensionMismatchError,
    InvalidParameterError,
    InvalidVectorError,
    NotFittedError,
)

__all__ = ["BucketFeatures", "EDGES", "DEFAULT_BINS", "uniform_edges"]

EDGES = ("quantile", "uniform")
DEFAULT_BINS = (1, 2, 4, 8, 12, 16, 20)
_MAX_BINS = 4096
_BLOCK = 2048  # rows per block: the temporaries of one block stay in cache
_CELLS = 1024  # lookup cells per projection in transform (see _Lookup)
_FORMAT = "lshdb.features.BucketFeatures/1"


def uniform_edges(nb: int) -> np.ndarray:
    """The published grid of ``nb`` bins over [-1, 1]: ``nb`` bin centres, in float32.

    The same float32 values as PyTorch's ``torch.linspace(-1, 1, nb + 1)[:-1] + 1 / nb``
    on the CPU: its linspace takes ``start + step * i`` for the first half and
    ``end - step * (steps - 1 - i)`` for the second, each one fused multiply-add (emulated
    here in float64, where both are exact, then rounded once).
    """
    steps = nb + 1
    step = np.float32(np.float32(2.0) / np.float32(steps - 1))
    i = np.arange(steps - 1, dtype=np.float64)  # the last point (1.0) is dropped
    lin = np.where(i < steps // 2, -1.0 + np.float64(step) * i,
                   1.0 - np.float64(step) * (steps - 1 - i)).astype(np.float32)
    return (lin + np.float32(1.0 / nb)).astype(np.float32)


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InvalidParameterError(f"{name} must be an int in {lo}..{hi}; found {value!r}")
    return int(value)


def _check_bins(bins: Any) -> tuple[int, ...]:
    try:
        levels = tuple(bins)
    except TypeError:
        raise InvalidParameterError(
            f"bins must be a sequence of ints (bins per level, e.g. {DEFAULT_BINS}); "
            f"found {bins!r}") from None
    if not levels:
        raise InvalidParameterError("bins is empty; give at least one level, e.g. (8,)")
    out = tuple(_check_int("every entry of bins", b, 1, _MAX_BINS) for b in levels)
    if len(set(out)) != len(out):
        raise InvalidParameterError(f"bins repeats a level: {out}; give each number once")
    return out


def _strictly_increasing(e: np.ndarray) -> np.ndarray:
    """Float32 edges nudged up by the fewest ulps that make them strictly increasing (ties
    in the data would otherwise leave buckets that nothing can reach)."""
    out = e.astype(np.float32)
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = np.nextafter(out[i - 1], np.float32(np.inf))
    return out


def _quantile_edges(z: np.ndarray, bins: tuple[int, ...]) -> list[np.ndarray]:
    """Per level, ``nb`` edges splitting the values ``z`` into ``nb + 1`` equal shares.

    Each edge sits midway across the widest gap between distinct neighbouring values
    within 1% of a share of its quantile, so no fitted value lies within rounding of an
    edge and a value computed with another rounding (PyTorch's product against numpy's)
    lands in the same bucket.
    """
    u, counts = np.unique(z, return_counts=True)
    if len(u) < 2:
        return [_strictly_increasing(np.full(nb, u[0], dtype=np.float32)) for nb in bins]
    below = np.cumsum(counts)[:-1]  # values below the gap after u[m]
    gaps = np.diff(u.astype(np.float64))
    out = []
    for nb in bins:
        target = len(z) * np.arange(1, nb + 1) / (nb + 1)
        hi = np.clip(np.searchsorted(below, target), 0, len(below) - 1)
        lo = np.maximum(hi - 1, 0)
        near = np.where(np.abs(below[lo] - target) <= np.abs(below[hi] - target), lo, hi)
        w = int(0.01 * len(z) / (nb + 1))
        window = np.clip(near[:, None] + np.arange(-w, w + 1)[None, :], 0, len(gaps) - 1)
        pick = window[np.arange(nb), np.argmax(gaps[window], axis=1)]
        out.append(_strictly_increasing(((u[pick].astype(np.float64) + u[pick + 1]) / 2)
                                        .astype(np.float32)))
    return out


class _Lookup:
    """Every level's bucket of every projection at once, exactly, with two gathers.

    ``cell(z) = clip(floor((z - lo) * scale))`` is monotone in z (each float32 step rounds
    monotonically), so an edge in an earlier cell is below z and one in a later cell is
    above it; only the few edges sharing z's cell are compared directly. The cell and that
    count select a row holding the buckets of all levels (uint8 or uint16 each).
    """

    def __init__(self, edges: list[np.ndarray]) -> None:
        p, n_cells = edges[0].shape[0], _CELLS + 2
        union = [np.unique(np.concatenate([e[j] for e in edges])) for j in range(p)]
        self.lo = np.array([u[0] for u in union], dtype=np.float32)
        span = np.array([u[-1] for u in union], dtype=np.float32) - self.lo
        self.scale = (np.float32(_CELLS) / np.maximum(span, np.float32(1e-30))).astype(np.float32)
        cells = [self.cells(u, self.lo[j], self.scale[j]) for j, u in enumerate(union)]
        per_cell = [np.bincount(c, minlength=n_cells) for c in cells]
        self.depth = max(int(b.max()) for b in per_cell)
        self.slots = np.full((self.depth, p * n_cells), np.inf, dtype=np.float32)
        width = self.depth + 1
        small = max(e.shape[1] for e in edges) < 256
        dtype = np.dtype(np.uint8 if small else np.uint16)
        row_bytes = -(-len(edges) * dtype.itemsize // 8) * 8
        table = np.zeros((p, n_cells, width, row_bytes // dtype.itemsize), dtype=dtype)
        for j, (u, c, b) in enumerate(zip(union, cells, per_cell)):
            before = np.concatenate([[0], np.cumsum(b)[:-1]])
            self.slots[np.arange(len(u)) - before[c], j * n_cells + c] = u
            # row (cell, k): the largest union edge below z is number before + k - 1
            below = np.concatenate([[-np.inf], u])
            pos = np.minimum(before[:, None] + np.arange(width)[None, :], len(u))
            for level, e in enumerate(edges):
                table[j, :, :, level] = np.searchsorted(e[j], below[pos], side="right")
        self.levels = len(edges)
        self.table = table.view(np.dtype((np.void, row_bytes))).ravel()
        self.row_dtype = dtype
        self.base = (np.arange(p, dtype=np.int64) * n_cells)[None, :]

    @staticmethod
    def cells(z: np.ndarray, lo: Any, scale: Any) -> np.ndarray:
        """The cell of each value: 0 below ``lo``, 1.._CELLS + 1 from ``lo`` up."""
        with np.errstate(over="ignore", invalid="ignore"):
            c = np.subtract(z, lo)
            np.multiply(c, scale, out=c)
        np.floor(c, out=c)
        np.clip(c, -1, _CELLS, out=c)
        out = c.astype(np.int64)
        out += 1
        return out

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """``(n, levels, projections)`` buckets (a strided view) of projections ``z``."""
        flat = self.cells(z, self.lo, self.scale)
        flat += self.base
        key = flat * (self.depth + 1)
        for k in range(self.depth):
            key += np.take(self.slots[k], flat) < z
        rows = np.take(self.table, key).view(self.row_dtype).reshape(len(z), z.shape[1], -1)
        return rows.transpose(0, 2, 1)[:, : self.levels, :]


class BucketFeatures:
    """Multi-resolution bucket ids of random projections (see the module docstring).

    Parameters
    ----------
    dim : int
        Dimension of the input vectors.
    projections : int
        Random unit directions each row is projected onto.
    bins : sequence of int
        Bins per level, one level each (``nb`` bins: ``nb`` edges, ``nb + 1`` buckets).
    edges : {"quantile", "uniform"}
        ``"quantile"``: per-projection edges at quantiles of the data given to
        :meth:`fit` (every bucket holds about the same share of it). ``"uniform"``: the
        published grid over [-1, 1], no fitting needed.
    seed : int
        Seeds the projection matrix.
    projection : array of shape (dim, projections), optional
        Use this projection matrix (its columns are normalised) instead of drawing one,
        e.g. to reproduce a trained PyTorch module's ids.
    """

    def __init__(self, dim: int, projections: int = 64, bins: Sequence[int] = DEFAULT_BINS,
                 edges: str = "quantile", seed: int = 0,
                 projection: np.ndarray | None = None) -> None:
        self.dim = _check_int("dim", dim, 1, 1 << 20)
        self.projections = _check_int("projections", projections, 1, 1 << 16)
        self.bins = _check_bins(bins)
        if edges not in EDGES:
            raise InvalidParameterError(f"edges must be one of {EDGES}; found {edges!r}")
        self.edges = edges
        self.seed = _check_int("seed", seed, 0, 2**63 - 1)
        if projection is None:
            A = np.random.default_rng(self.seed).standard_normal((self.dim, self.projections))
        else:
            A = np.asarray(projection, dtype=np.float64)
            if A.shape != (self.dim, self.projections):
                raise InvalidParameterError(
                    f"projection must have shape (dim, projections) = "
                    f"({self.dim}, {self.projections}); found {A.shape}")
            if not np.isfinite(A).all() or not (np.abs(A).sum(axis=0) > 0).all():
                raise InvalidParameterError(
                    "projection holds NaN, inf or an all-zero column; give finite directions")
        self._projection = (A / np.linalg.norm(A, axis=0)).astype(np.float32)
        sizes = [(nb + 1) * self.projections for nb in self.bins]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.n_buckets = int(sum(sizes))
        self._edges: list[np.ndarray] | None = None
        self._lookup: _Lookup | None = None
        if edges == "uniform":
            self._set_edges([np.tile(uniform_edges(nb), (self.projections, 1))
                             for nb in self.bins])

    # -- attributes ------------------------------------------------------------------
    @property
    def projection(self) -> np.ndarray:
        """The ``(dim, projections)`` float32 projection matrix (unit-norm columns); a copy."""
        return self._projection.copy()

    @property
    def fitted(self) -> bool:
        """True once the edges are known (always for ``edges="uniform"``)."""
        return self._edges is not None

    def level_edges(self) -> list[np.ndarray]:
        """Per level, the ``(projections, nb)`` float32 edges (copies).

        Raises
        ------
        NotFittedError
            ``edges="quantile"`` and :meth:`fit` has not run.
        """
        return [e.copy() for e in self._require_edges()]

    def offsets(self) -> np.ndarray:
        """Per level, the first id of the level (int64)."""
        return self._offsets.copy()

    def __repr__(self) -> str:
        return (f"BucketFeatures(dim={self.dim}, projections={self.projections}, "
                f"bins={self.bins}, edges={self.edges!r}, seed={self.seed}"
                f"{'' if self.fitted else ', unfitted'})")

    # -- fitting and transforming ----------------------------------------------------
    def fit(self, X: Any) -> BucketFeatures:
        """Learn each projection's edges from the rows of ``X`` (a no-op for "uniform").

        Level ``nb`` gets edges at the ``i / (nb + 1)`` quantiles (i = 1..nb) of each
        projection of ``X``, each midway between two neighbouring values, in float32.

        Returns
        -------
        BucketFeatures
            ``self``.

        Raises
        ------
        InvalidVectorError, DimensionMismatchError
            ``X`` is not a 2-D numeric array of ``dim`` columns, holds NaN or inf, or has
            fewer rows than the finest level has buckets.
        """
        Z = self._project(self._check(X, "fit"))
        if self.edges == "uniform":
            return self
        need = max(self.bins) + 1
        if len(Z) < need:
            raise InvalidVectorError(
                f"fit: {len(Z)} rows cannot place {max(self.bins)} quantile edges; give at "
                f"least {need} rows (ideally thousands)")
        per_projection = [_quantile_edges(Z[:, j], self.bins) for j in range(self.projections)]
        self._set_edges([np.stack([e[level] for e in per_projection])
                         for level in range(len(self.bins))])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Bucket ids of every row of ``X``: int64, shape ``(n, projections * len(bins))``.

        Rows are L2-normalised first (a zero row stays zero, as in the PyTorch
        original). float16, float32 and float64 input is computed in float32.

        Raises
        ------
        NotFittedError
            ``edges="quantile"`` and :meth:`fit` has not run.
        InvalidVectorError, DimensionMismatchError
            ``X`` is not a 2-D numeric array of ``dim`` columns, or holds NaN or inf.
        """
        self._require_edges()
        A = self._check(X, "transform")
        n, p, n_lv = len(A), self.projections, len(self.bins)
        out = np.empty((n, n_lv, p), dtype=np.int64)
        lookup = self._lookup
        if lookup is None:
            raise NotFittedError("transform before fit")  # unreachable: edges imply a lookup
        for s in range(0, n, _BLOCK):
            np.add(lookup(self._project(A[s : s + _BLOCK])), self._base, out=out[s : s + _BLOCK])
        return out.reshape(n, n_lv * p)

    def fit_transform(self, X: Any) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` of the same rows."""
        return self.fit(X).transform(X)

    def level_of(self, ids: np.ndarray) -> np.ndarray:
        """The level (index into ``bins``) each id belongs to."""
        return np.searchsorted(self._offsets, np.asarray(ids), side="right") - 1

    # -- saving ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this featuriser, as JSON-serialisable values
        (the projection matrix and the fitted edges as lists of floats)."""
        return {
            "format": _FORMAT, "dim": self.dim, "projections": self.projections,
            "bins": list(self.bins), "edges": self.edges, "seed": self.seed,
            "projection": self._projection.astype(float).tolist(),
            "fitted_edges": (None if self._edges is None or self.edges == "uniform"
                             else [e.astype(float).tolist() for e in self._edges]),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BucketFeatures:
        """Rebuild a featuriser saved with :meth:`to_dict` (same ids).

        Raises
        ------
        InvalidParameterError
            ``d`` is not what :meth:`to_dict` writes.
        """
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise InvalidParameterError(
                f"not a saved BucketFeatures (expected format {_FORMAT!r}); found "
                f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r}")
        try:
            f = cls(d["dim"], d["projections"], d["bins"], d["edges"], d["seed"],
                    projection=np.asarray(d["projection"], dtype=np.float32))
            if d["fitted_edges"] is not None:
                edges = [np.asarray(e, dtype=np.float32) for e in d["fitted_edges"]]
                shapes = [(f.projections, nb) for nb in f.bins]
                if [e.shape for e in edges] != shapes:
                    raise InvalidParameterError(
                        f"saved edges have shapes {[e.shape for e in edges]}; expected {shapes}")
                f._set_edges(edges)
        except KeyError as exc:
            raise InvalidParameterError(f"saved BucketFeatures lacks {exc}") from None
        return f

    # -- implementation --------------------------------------------------------------
    def _require_edges(self) -> list[np.ndarray]:
        if self._edges is None:
            raise NotFittedError(
                'BucketFeatures(edges="quantile") has no edges yet; call fit(X) with training '
                'vectors first (or use edges="uniform", which needs no fitting)')
        return self._edges

    def _set_edges(self, edges: list[np.ndarray]) -> None:
        for e in edges:
            if not np.isfinite(e).all() or (np.diff(e, axis=1) <= 0).any():
                raise InvalidParameterError("edges must be finite and strictly increasing")
        self._edges = [np.ascontiguousarray(e, dtype=np.float32) for e in edges]
        self._lookup = _Lookup(self._edges)
        self._base = np.array([self._offsets[level] + (nb + 1) * np.arange(self.projections)
                               for level, nb in enumerate(self.bins)], dtype=np.int64)

    def _check(self, X: Any, what: str) -> np.ndarray:
        try:
            A = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise InvalidVectorError(f"{what}: input cannot be read as an array: {exc}") from exc
        if A.dtype.kind not in "fiu" or A.dtype == np.bool_:
            raise InvalidVectorError(f"{what}: vectors must be float (or int); found {A.dtype}")
        if A.ndim != 2:
            raise InvalidVectorError(
                f"{what}: vectors must be a 2-D array (n, {self.dim}); found shape {A.shape}")
        if A.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"{what}: vectors have dimension {A.shape[1]}; this featuriser expects "
                f"{self.dim}")
        if A.dtype != np.float32:
            A = A.astype(np.float32)
        bad = ~np.isfinite(A).all(axis=1)
        if bad.any():
            raise InvalidVectorError.at_row(
                f"{what}: vectors", int(np.flatnonzero(bad)[0]),
                f"holds NaN or inf ({int(bad.sum())} such rows); clean the input first")
        return A

    def _project(self, A: np.ndarray) -> np.ndarray:
        norms = np.sqrt(np.einsum("ij,ij->i", A, A))
        return (A / np.maximum(norms, np.float32(1e-12))[:, None]) @ self._projection
