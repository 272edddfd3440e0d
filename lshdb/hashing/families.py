"""Hash families for dense vectors and binary codes: pure numpy, no I/O.

A family holds ``L`` tables of ``k`` hash functions each. ``hash(X)`` maps an ``(n, dim)``
array to ``(n, L)`` uint64 bucket keys: the k values of one table combined into one key (the
AND), one key per table (the OR). ``probe(x, T)`` lists the ``T`` buckets a query should
visit, best first: the ``L`` home buckets, then the buckets it *almost* fell into, ordered by
the perturbation score of Lv et al. (2007), merged across tables.

Families
--------
``hyperplane``   cosine; h(v) = [a.v > 0], a ~ N(0, I) normalised; p = 1 - theta/pi.
``gaussian``     l2 (p-stable, Datar et al. 2004): h(v) = floor((a.v + b) / w), a ~ N(0, I).
``cauchy``       l1 (p-stable): as above with a ~ Cauchy.
``bitsample``    hamming over packed uint8 codes: h(x) = bit i of x; p = 1 - d/D.
``unary``        l1 on small non-negative integers (Gionis, Indyk, Motwani 1999): bits of the
                 implicit unary embedding, h(x) = [x_i > t]; p = 1 - l1(x, y) / (dim * C).

Every random choice (matrices, offsets, positions) is drawn from a seeded generator and
stored in the index, so an index never depends on re-deriving them.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from ..bits import mix64
from ..errors import CorruptIndexError, InvalidParameterError
from ..storage.codec import decode_array, encode_array
from .multiprobe import best_perturbations, cheapest_sets

__all__ = [
    "Family",
    "Hyperplane",
    "PStable",
    "BitSample",
    "Unary",
]

_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False
_BLOCK = 1 << 15  # rows hashed per block: bounds the temporary (block, L*k) matrix


def _check_kl(k: int, L: int, max_k: int = 64) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= max_k:
        raise InvalidParameterError(f"k (hash functions per table) must be 1..{max_k}; found {k!r}")
    if not isinstance(L, (int, np.integer)) or not 1 <= L <= 1000:
        raise InvalidParameterError(f"L (tables) must be 1..1000; found {L!r}")


class Projection:
    """``X @ A + b`` whose bucket decisions do not depend on the batch a row is in.

    BLAS picks kernels, and so summation orders, by the shape of a product: the same row
    projected alone and inside a large batch can differ in the last bits. In float32 that
    moved a value across a bucket boundary (0 for hyperplane signs, an integer for p-stable
    slots) about once in 10^5 hashes at 128 dims (measured), so an item landed in a
    different bucket than a query for the same vector, and the deep check saw an id "in the
    wrong bucket".

    :meth:`signs` and :meth:`floors` therefore compute in float32 (fast BLAS) and keep each
    value that its float32 error bound cannot move across a boundary: twice the textbook
    bound of the product, ``2 * dim * 2**-24 * |x| * |a|``, plus the roundings of ``A``,
    ``b`` and the sum. Only the values inside that band (1-2 in 10^4, measured on clustered
    128-d data) are recomputed, one by one, in float64 with a fixed summation order, the
    same for a row alone or in any batch. ``__call__`` gives float64 values (probing
    margins, where the last bits only order the probes).
    """

    def __init__(self, A: np.ndarray, b: np.ndarray | None = None) -> None:
        self.A = np.ascontiguousarray(A, dtype=np.float64)
        b64 = None if b is None else np.ascontiguousarray(b, dtype=np.float64)
        self.b = b64
        self._A32 = self.A.astype(np.float32)
        self._b32 = None if b64 is None else b64.astype(np.float32)
        self._AT = np.ascontiguousarray(self.A.T)  # columns as rows, for the recheck
        cols = np.sqrt((self.A * self.A).sum(axis=0))
        # product error per unit |x|, including A's own rounding to float32
        self._tol = (2.0 * self.A.shape[0] * 2.0**-24 + 2.0**-23) * cols
        self._tol_max = float(self._tol.max()) if cols.size else 0.0
        self._col_max = float(cols.max()) if cols.size else 0.0
        self._b_max = 0.0 if b64 is None else float(np.abs(b64).max(initial=0.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        p = np.asarray(X, dtype=np.float64) @ self.A
        if self.b is not None:
            p += self.b
        return p

    def _exact(self, X: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """float64 ``X[r] . A[:, c]`` (+ b[c]), elementwise, batch-independent."""
        v = (X[r].astype(np.float64) * self._AT[c]).sum(axis=1)
        if self.b is not None:
            v += self.b[c]
        return v

    def _row_band(self, norms: Any, offset: bool) -> Any:
        """The error band that holds for a whole row of norm ``norms`` (a float or an
        array); ``offset``: the product has ``+ b``, whose rounding scales with the value."""
        band = norms * self._tol_max
        if offset:
            band = band + 2.0**-23 * (norms * self._col_max + self._b_max + 2.0)
        return band

    def _suspects(self, X: np.ndarray, dist: np.ndarray, mag: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) whose distance to a boundary is within the float32 error band.

        ``mag`` bounds ``|value|`` per element (the rounding of ``+ b`` scales with it).
        Rows are screened first by their nearest value against a band that holds for the
        whole row, so only a few rows are examined element by element."""
        if len(X) == 1:  # a query: the same screen on scalars, without 2-D reductions
            x = X[0].astype(np.float64)
            norm = math.sqrt(float(x @ x))
            if not float(dist[0].min()) <= self._row_band(norm, mag is not None):
                return _NO_ROWS, _NO_ROWS
            norms = np.array([norm])
        else:
            norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
        rows = np.flatnonzero(dist.min(axis=1) <= self._row_band(norms, mag is not None))
        if not len(rows):
            return rows, rows
        band = np.multiply.outer(norms[rows], self._tol)
        if mag is not None:
            band += 2.0**-23 * (np.abs(mag[rows]) + 2.0)
        r, c = np.nonzero(dist[rows] <= band)
        return rows[r], c

    def _float32(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as float32 and its float32 ``X @ A + b``."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        p = X @ self._A32
        if self._b32 is not None:
            p += self._b32
        return X, p

    def signs(self, X: np.ndarray) -> np.ndarray:
        """``X @ A + b > 0`` as a bool matrix."""
        X, p = self._float32(X)
        out = p > 0
        r, c = self._suspects(X, np.abs(p, out=p), None if self._b32 is None else p)
        if len(r):
            out[r, c] = self._exact(X, r, c) > 0
        return out

    def signs_one(self, x: np.ndarray) -> np.ndarray:
        """:meth:`signs` of one float32 vector, as a 1-D bool array: one matrix-vector
        product (any summation order stays within the band) and the same screen, on
        scalars first."""
        p = x @ self._A32
        if self._b32 is not None:
            p += self._b32
        out = p > 0
        x64 = x.astype(np.float64)
        norm = math.sqrt(float(x64 @ x64))
        mag = np.abs(p, out=p)
        if float(mag.min()) <= self._row_band(norm, self._b32 is not None):
            band = norm * self._tol
            if self._b32 is not None:
                band += 2.0**-23 * (mag + 2.0)
            c = np.flatnonzero(mag <= band)
            if len(c):
                out[c] = self._exact(x[None], np.zeros(len(c), dtype=np.intp), c) > 0
        return out

    def floors(self, X: np.ndarray) -> np.ndarray:
        """``floor(X @ A + b)``: a float32 matrix of integers (exact below 2**24, and
        beyond that every float32 is an integer)."""
        X, p = self._float32(X)
        out = np.floor(p)
        p -= out  # the fraction, in [0, 1]; the nearer boundary is min(p, 1 - p) away
        r, c = self._suspects(X, np.minimum(p, 1.0 - p, out=p), out)
        if len(r):
            out[r, c] = np.floor(self._exact(X, r, c))
        return out


class Family:
    """Base class: ``L`` tables of ``k`` functions over ``dim``-dimensional input."""

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""

    def __init__(self, dim: int, k: int, L: int, seed: int) -> None:
        _check_kl(k, L, self.max_k)
        self.dim = int(dim)
        self.k = int(k)
        self.L = int(L)
        self.seed = int(seed)

    max_k: ClassVar[int] = 64

    # -- hashing ---------------------------------------------------------------------
    def hash(self, X: np.ndarray) -> np.ndarray:
        """Bucket keys of every row of ``X``: an ``(n, L)`` uint64 array."""
        n = X.shape[0]
        out = np.empty((n, self.L), dtype=np.uint64)
        for s in range(0, n, _BLOCK):
            out[s : s + _BLOCK] = self._hash_block(X[s : s + _BLOCK])
        return out

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probe(self, x: np.ndarray, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
        """The buckets to visit for one query, best first: ``(tables, keys)``.

        The first ``L`` entries are the home buckets (one per table); ``n_probes`` counts
        every bucket visited, so ``n_probes <= L`` means no extra probing.
        """
        home = self.hash(x[None, :])[0]
        tables = np.arange(self.L)
        if n_probes <= self.L:
            return tables, home
        extra_t, extra_k = self._extra_probes(x, home, n_probes - self.L)
        return np.concatenate([tables, extra_t]), np.concatenate([home, extra_k])

    def _extra_probes(self, x: np.ndarray, home: np.ndarray,
                      n_extra: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- persistence -----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Everything needed to rebuild this family, msgpack-ready (arrays encoded)."""
        return {"family": self.name, "k": self.k, "L": self.L, "seed": self.seed}

    def describe(self) -> dict[str, Any]:
        """Scalar parameters for ``stats`` and error messages."""
        return {"family": self.name, "k": self.k, "L": self.L, "seed": self.seed}


class _BitFamily(Family):
    """Families whose k functions are bits packed into the key (k <= 64)."""

    def _keys_from_bits(self, bits: np.ndarray) -> np.ndarray:
        """Bit j of table t's key is function j of table t (little-endian).

        Up to 24 bits per key (52 in float64) the keys are one BLAS product of the bits
        with a block-diagonal matrix of powers of two, exact because every sum of distinct
        powers of two below 2**24 is a float32; wider keys use ``packbits``.
        """
        n = bits.shape[0]
        if self.k <= 52:
            W = self._powers
            return (bits.view(np.uint8).astype(W.dtype) @ W).astype(np.uint64)
        packed = np.packbits(bits.reshape(n, self.L, self.k), axis=2, bitorder="little")
        out = np.zeros((n, self.L, 8), dtype=np.uint8)
        out[:, :, : packed.shape[2]] = packed
        return out.view("<u8").reshape(n, self.L).astype(np.uint64, copy=False)

    @cached_property
    def _powers(self) -> np.ndarray:
        W = np.zeros((self.L * self.k, self.L), dtype=np.float32 if self.k <= 24 else np.float64)
        for t in range(self.L):
            W[t * self.k : (t + 1) * self.k, t] = 2.0 ** np.arange(self.k)
        return W

    def _margins(self, x: np.ndarray) -> np.ndarray:
        """(L, k) margins: how far each bit is from flipping (smaller flips first)."""
        return np.ones((self.L, self.k))

    def _extra_probes(self, x: np.ndarray, home: np.ndarray,
                      n_extra: int) -> tuple[np.ndarray, np.ndarray]:
        m = self._margins(x)
        if self.k <= 52:
            # a set's mask is the sum of its actions' powers of two: one small product,
            # exact in float64 (distinct powers below 2**52)
            pick, order, inc = cheapest_sets(m.astype(np.float64) ** 2, n_extra)
            masks = (np.ldexp(1.0, order) @ inc).ravel()[pick].astype(np.uint64)
            tables = pick // inc.shape[1]
            return tables, home[tables] ^ masks
        tables, act = best_perturbations(m.astype(np.float64) ** 2, n_extra)
        bits = np.where(act >= 0, np.left_shift(np.uint64(1), np.maximum(act, 0).astype(np.uint64)),
                        np.uint64(0))
        masks = bits[:, 0] | bits[:, 1] | bits[:, 2]
        return tables, home[tables] ^ masks


class Hyperplane(_BitFamily):
    """Random hyperplanes (SimHash) for cosine distance."""

    name = "hyperplane"
    metric = "cosine"

    def __init__(self, dim: int, k: int, L: int, seed: int = 0,
                 A: np.ndarray | None = None) -> None:
        super().__init__(dim, k, L, seed)
        if A is None:
            rng = np.random.default_rng(seed)
            A = rng.standard_normal((dim, k * L))
            A /= np.linalg.norm(A, axis=0, keepdims=True)
        if A.shape != (dim, k * L):
            raise CorruptIndexError(f"hyperplane matrix has shape {A.shape}; expected {(dim, k * L)}")
        self.A = np.ascontiguousarray(A, dtype=np.float32)
        self._project = Projection(self.A)

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return self._keys_from_bits(self._project.signs(X))

    def _margins(self, x: np.ndarray) -> np.ndarray:
        p = self._project(x[None, :])[0]
        return np.abs(p.reshape(self.L, self.k)) / max(float(np.linalg.norm(x)), 1e-30)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "A": encode_array(self.A)}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> Hyperplane:
        return cls(dim, p["k"], p["L"], p["seed"], A=decode_array(p["A"], "hyperplane matrix"))


class PStable(Family):
    """p-stable projections (E2LSH): Gaussian for l2, Cauchy for l1."""

    name = "pstable"
    metric = "l2"

    def __init__(self, dim: int, k: int, L: int, w: float, seed: int = 0,
                 distribution: str = "gaussian", A: np.ndarray | None = None,
                 b: np.ndarray | None = None, R: np.ndarray | None = None) -> None:
        super().__init__(dim, k, L, seed)
        if distribution not in ("gaussian", "cauchy"):
            raise InvalidParameterError(
                f"p-stable distribution must be 'gaussian' or 'cauchy'; found {distribution!r}")
        if not np.isfinite(w) or w <= 0:
            raise InvalidParameterError(f"width w must be a positive number; found {w!r}")
        self.distribution = distribution
        self.w = float(w)
        rng = np.random.default_rng(seed)
        if A is None:
            A = (rng.standard_normal((dim, k * L)) if distribution == "gaussian"
                 else rng.standard_cauchy((dim, k * L)))
        if b is None:
            b = rng.uniform(0.0, 1.0, k * L)  # in units of w
        if R is None:
            R = rng.integers(0, 2**63, k, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        if A.shape != (dim, k * L) or b.shape != (k * L,) or R.shape != (k,):
            raise CorruptIndexError("p-stable parameters have inconsistent shapes")
        self.A = np.ascontiguousarray(A, dtype=np.float32)
        self.b = np.ascontiguousarray(b, dtype=np.float64)
        self.R = np.ascontiguousarray(R, dtype=np.uint64)
        self._project = Projection(self.A.astype(np.float64) / self.w, self.b)

    def _fractional(self, X: np.ndarray) -> np.ndarray:
        return self._project(X)

    def _combine(self, slots: np.ndarray) -> np.ndarray:
        """Per table, ``sum_j slot_j * R_j`` modulo 2**64 (int64 arithmetic wraps the same
        bits); ``slots`` may hold the integers as floats."""
        s = slots.reshape(slots.shape[0], self.L, self.k)
        R = self.R.view(np.int64)
        acc = s[:, :, 0].astype(np.int64) * R[0]
        for j in range(1, self.k):
            acc += s[:, :, j].astype(np.int64) * R[j]
        return acc.view(np.uint64)

    def slots(self, X: np.ndarray) -> np.ndarray:
        """The integer slot of every function for each row, ``(n, L * k)`` table-major,
        before the slots of a table are combined into its key."""
        return self._project.floors(X)  # type: ignore[no-any-return]

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return mix64(self._combine(self._project.floors(X)), copy=False)

    def probe(self, x: np.ndarray, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
        f = self._fractional(x[None, :])[0]
        slots = self._project.floors(x[None, :])[0]  # the home buckets exactly as items hash
        base = self._combine(slots[None, :])[0]
        home = mix64(base)
        tables = np.arange(self.L)
        if n_probes <= self.L:
            return tables, home
        frac = np.clip(f - slots, 0.0, 1.0).reshape(self.L, self.k)
        # 2k actions per table: (coordinate j, -1) at distance frac, (j, +1) at 1 - frac
        dist = np.concatenate([frac, 1.0 - frac], axis=1)
        coords = np.tile(np.arange(2 * self.k) % self.k, (self.L, 1))
        tables_x, act = best_perturbations(dist**2, n_probes - self.L, coords)
        delta = np.concatenate([np.uint64(0) - self.R, self.R, [np.uint64(0)]])  # -R, +R, none
        moves = delta[np.where(act >= 0, act, 2 * self.k)]
        with np.errstate(over="ignore"):
            total = base[tables_x] + moves[:, 0] + moves[:, 1] + moves[:, 2]
        return (np.concatenate([tables, tables_x]), np.concatenate([home, mix64(total)]))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "w": self.w, "distribution": self.distribution,
                "A": encode_array(self.A), "b": encode_array(self.b), "R": encode_array(self.R)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "w": self.w, "distribution": self.distribution}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> PStable:
        return cls(dim, p["k"], p["L"], p["w"], p["seed"], p["distribution"],
                   A=decode_array(p["A"], "projection matrix"),
                   b=decode_array(p["b"], "offsets"), R=decode_array(p["R"], "key multipliers"))


class BitSample(_BitFamily):
    """Bit sampling for Hamming distance over codes of ``dim`` bits packed as uint8."""

    name = "bitsample"
    metric = "hamming"

    def __init__(self, dim: int, k: int, L: int, seed: int = 0,
                 positions: np.ndarray | None = None) -> None:
        super().__init__(dim, k, L, seed)
        if positions is None:
            positions = np.random.default_rng(seed).integers(0, dim, k * L)
        if positions.shape != (k * L,) or positions.min() < 0 or positions.max() >= dim:
            raise CorruptIndexError("bit-sampling positions are inconsistent with dim, k and L")
        self.positions = positions.astype(np.int64)
        self._byte = self.positions // 8
        self._shift = (7 - self.positions % 8).astype(np.uint8)

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return self._keys_from_bits((X[:, self._byte] >> self._shift) & 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "positions": encode_array(self.positions)}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> BitSample:
        return cls(dim, p["k"], p["L"], p["seed"],
                   positions=decode_array(p["positions"], "bit positions"))


class Unary(_BitFamily):
    """Bit sampling of the unary embedding of non-negative integers <= ``max_value``."""

    name = "unary"
    metric = "l1"

    def __init__(self, dim: int, k: int, L: int, max_value: int, seed: int = 0,
                 coords: np.ndarray | None = None,
                 thresholds: np.ndarray | None = None) -> None:
        super().__init__(dim, k, L, seed)
        if not isinstance(max_value, (int, np.integer)) or not 1 <= max_value <= 2**24:
            raise InvalidParameterError(
                f"max_value for the unary family must be an int in 1..2**24; found {max_value!r}")
        self.max_value = int(max_value)
        rng = np.random.default_rng(seed)
        if coords is None or thresholds is None:
            # a uniform bit of the (dim * C)-bit embedding: coordinate i, threshold t < C
            flat = rng.integers(0, dim * self.max_value, k * L)
            coords, thresholds = flat // self.max_value, flat % self.max_value
        if coords.shape != (k * L,) or thresholds.shape != (k * L,):
            raise CorruptIndexError("unary positions are inconsistent with k and L")
        self.coords = coords.astype(np.int64)
        self.thresholds = thresholds.astype(np.float32)

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return self._keys_from_bits(X[:, self.coords] > self.thresholds)

    def _margins(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x[self.coords] - self.thresholds - 0.5).reshape(self.L, self.k)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "max_value": self.max_value,
                "coords": encode_array(self.coords), "thresholds": encode_array(self.thresholds)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_value": self.max_value}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> Unary:
        return cls(dim, p["k"], p["L"], p["max_value"], p["seed"],
                   coords=decode_array(p["coords"], "unary coordinates"),
                   thresholds=decode_array(p["thresholds"], "unary thresholds"))
