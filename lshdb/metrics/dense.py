"""Metrics: how input is validated and stored, and the exact distance used to re-rank.

=========  ==================================  ==========================================
metric     stored row                          distance returned by queries
=========  ==================================  ==========================================
cosine     float32, normalised to unit length  1 - cos(x, q), in [0, 2]
l2         float32                             Euclidean distance
l1         float32                             Manhattan distance
hamming    uint8, ``dim / 8`` packed bytes     number of differing bits
=========  ==================================  ==========================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import (
    CorruptIndexError,
    DimensionMismatchError,
    InvalidParameterError,
    InvalidVectorError,
)

__all__ = ["Metric", "Cosine", "L2", "L1", "Hamming", "CosineCodes", "check_k"]


def _check_finite(X: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InvalidVectorError.at_row(
            what, int(np.flatnonzero(bad)[0]),
            f"holds NaN or inf ({int(bad.sum())} such rows); clean the input first")


def _finite_float32(x: np.ndarray) -> np.ndarray | None:
    """A float vector as float32, or None if it holds NaN or inf (float32 squares summed in
    float64 cannot overflow, so a finite sum means finite values)."""
    x32 = x.astype(np.float32)
    x64 = x32.astype(np.float64)
    return x32 if math.isfinite(float(x64 @ x64)) else None


F16_MAX = 65504.0  # the largest finite float16


class Metric:
    """Validation, storage dtype and exact distances of one metric."""

    name = ""
    row_dtype: np.dtype[Any] = np.dtype("<f4")
    #: the field that carries a result's score (Python, CLI JSON lines, HTTP)
    score_field = "distance"
    #: items are sets (scored by similarity, highest first), not vectors
    is_set = False
    #: a scan keeps each row's squared norm (:class:`~lshdb.storage.rows.RowNorms`)
    needs_norms = False
    #: rows are stored normalised to unit length
    normalised = False
    #: an index of this metric is created with a dimension (a set metric takes none)
    takes_dim = True
    #: input rows are bits: packed bytes (or booleans)
    bit_input = False
    #: the hash families that serve this metric, the default first
    families: tuple[str, ...] = ()
    #: SimHash codes (``codes=B``) may be kept beside the rows
    simhash_codes = False
    #: ``store="codes"`` may keep SimHash codes instead of the rows
    codes_only = False
    #: the p-stable family's width ``w`` applies
    has_width = False
    #: the p-stable distribution whose projections preserve this distance
    pstable_distribution = "cauchy"
    #: rows may be kept as float16 (``dtype="float16"``)
    float16_rows = False
    #: the product form gives the distances themselves (not only their order)
    product_exact = False

    @classmethod
    def default_tables(cls, options: dict[str, Any]) -> int:
        """Number of tables when the caller gave none."""
        return int(options.get("L", 16))

    @classmethod
    def input_dim(cls, columns: int) -> int:
        """The index dimension for input rows of ``columns`` values."""
        return columns

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def stored_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The index options as stored at creation (a metric may fill in defaults)."""
        return options

    def code_centre(self, X: np.ndarray) -> np.ndarray | None:
        """The centre of the first batch's SimHash codes (None: the origin)."""
        return None

    # -- query parameters ------------------------------------------------------------
    def check_k(self, k: int | None, threshold: float | None) -> None:
        """Validate a query's ``k``: an int >= 1; None only with a ``threshold``."""
        if k is not None or threshold is None:
            check_k(k)

    def check_threshold(self, threshold: Any) -> None:
        """Validate a radius query's ``threshold``: a distance, finite and >= 0."""
        if isinstance(threshold, bool) or not isinstance(
                threshold, (int, float, np.integer, np.floating)) \
                or not np.isfinite(threshold) or threshold < 0:
            raise InvalidParameterError(
                f"threshold is a distance: a finite number >= 0; found {threshold!r}")

    # -- scans -----------------------------------------------------------------------
    #: distances follow from the product ``Q @ rows.T`` (see :meth:`product_distances`)
    product_form = False

    def product_distances(self, P: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        """Distances from the product ``P = Q @ rows.T`` (in place where it can), given
        the rows' squared ``norms`` when :attr:`needs_norms`."""
        raise NotImplementedError(f"metric {self.name} has no product form")

    def scan_margin(self, k: int) -> int:
        """Extra rows a scan takes beyond ``k`` when its distances are not exact."""
        return 0

    # -- calibration -----------------------------------------------------------------
    def ranking_distances(self, B: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        """``(len(Q), len(B))`` values that order the rows ``B`` as their distances from
        each query do (a cheaper form where one exists); ``norms`` are the rows' squared
        norms when :attr:`needs_norms`."""
        return np.stack([self.distances(B, q) for q in Q])

    def neighbour_distances(self, Q: np.ndarray, N: np.ndarray) -> np.ndarray:
        """Distances from queries ``Q`` ``(q, 1, dim)`` to their neighbours ``N``
        ``(q, k, dim)``."""
        return np.abs(Q.astype(np.float64) - N).sum(-1)  # type: ignore[no-any-return]

    def neighbour_scale(self, Q: np.ndarray, N: np.ndarray) -> float:
        """The typical distance to a near neighbour (the median), which scales the
        p-stable width calibration tries."""
        return float(np.median(self.neighbour_distances(Q, N)))

    def row_dim(self) -> int:
        """Values stored per row."""
        return self.dim

    def hash_dim(self) -> int:
        """The dimension the hash family works on (the vector's; the code's bits)."""
        return self.dim

    # -- validation ------------------------------------------------------------------
    def prepare(self, X: Any, what: str = "vectors") -> np.ndarray:
        """Validate a 2-D batch and return it as stored rows (a new array)."""
        A = _as_array(X, what)
        if A.ndim != 2:
            raise InvalidVectorError(
                f"{what} must be a 2-D array (n, {self.dim}); found {A.ndim}-D shape {A.shape}")
        if A.shape[0] == 0:
            raise InvalidVectorError(f"{what}: the batch is empty; pass at least one vector")
        return self._prepare(A, what)

    def prepare_items(self, X: Any, what: str = "vectors") -> tuple[np.ndarray, Any]:
        """Stored rows of a batch and anything else the index keeps per item (None here).

        Under float16 rows the values are those the rows will hold (rounded to float16,
        kept as float32), so that hashes and codes computed now agree with those computed
        later from the stored rows."""
        A = self.prepare(X, what)
        if self.row_dtype.kind == "f" and self.row_dtype.itemsize == 2:
            big = np.abs(A).max(axis=1) > F16_MAX
            if big.any():
                raise InvalidVectorError.at_row(
                    what, int(np.flatnonzero(big)[0]),
                    f"holds a value beyond float16's range (+-{F16_MAX:g}); this index "
                    "stores float16 rows")
            A = A.astype(np.float16).astype(np.float32)
        return A, None

    def prepare_query(self, x: Any, what: str = "query") -> tuple[np.ndarray, Any]:
        return self.prepare_one(x, what), None

    def prepare_one(self, x: Any, what: str = "query") -> np.ndarray:
        if type(x) is np.ndarray and x.shape == (self.dim,) and x.dtype.kind == "f":
            out = self._prepare_vector(x)  # the common case, without 2-D passes
            if out is not None:
                return out
        A = _as_array(x, what)
        if A.ndim != 1:
            raise InvalidVectorError(
                f"{what} must be a 1-D vector of {self.dim} values; found shape {A.shape} "
                "(use query_batch for many queries)")
        return self._prepare(A[None, :], what)[0]

    def _prepare_vector(self, x: np.ndarray) -> np.ndarray | None:
        """The stored form of one float vector of the right dimension, as :meth:`_prepare`
        computes it; None when it needs the full checks (which raise)."""
        return None

    def _prepare(self, A: np.ndarray, what: str) -> np.ndarray:
        if A.dtype.kind not in "fiu":
            raise InvalidVectorError(f"{what} must be numeric (float or int); found dtype {A.dtype}")
        if A.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"{what} have dimension {A.shape[1]}; this index expects {self.dim}")
        out = np.array(A, dtype=np.float32, order="C")
        _check_finite(out, what)
        return out

    # -- distances -------------------------------------------------------------------
    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def distances_many(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """(len(Q), len(rows)) distances; the default loops over queries."""
        return np.stack([self.distances(rows, q) for q in Q])

    def distances_each(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """(b, m) distances from query ``Q[j]`` to each of its own rows ``rows[j]``
        (``(b, m, dim)``); the default loops over queries."""
        return np.stack([self.distances(r, q) for r, q in zip(rows, Q)])


class Cosine(Metric):
    name = "cosine"
    normalised = True
    families = ("hyperplane", "crosspolytope")
    simhash_codes = True
    codes_only = True
    product_form = True
    product_exact = True
    float16_rows = True

    def ranking_distances(self, B: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        return -(Q @ B.T)  # type: ignore[no-any-return]

    def neighbour_distances(self, Q: np.ndarray, N: np.ndarray) -> np.ndarray:
        return 1.0 - (Q * N).sum(-1)  # type: ignore[no-any-return]

    def product_distances(self, P: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        return np.subtract(np.float32(1.0), P, out=P)  # rows are stored normalised

    def _prepare(self, A: np.ndarray, what: str) -> np.ndarray:
        if A.dtype != np.float32 or not A.flags.c_contiguous:
            A = super()._prepare(A, what)  # converted (and checked) into a new array
        else:
            super()._prepare(A[:0], what)  # dtype and dimension checks only
        # one pass for the norms (a NaN or inf makes its row's norm non-finite, and is
        # found by the full check), one pass writing the normalised copy
        norms = np.sqrt(np.einsum("ij,ij->i", A, A, dtype=np.float64))
        if not np.isfinite(norms).all():
            _check_finite(A, what)
        zero = norms == 0
        if zero.any():
            raise InvalidVectorError.at_row(
                what, int(np.flatnonzero(zero)[0]),
                "is the zero vector, which has no direction under cosine; drop it or use "
                "metric='l2'")
        huge = np.flatnonzero(norms > 3e38)  # past float32's range: divide those in float64
        if len(huge):
            norms[huge] = 1.0
        out = A / norms.astype(np.float32)[:, None]
        if len(huge):
            out[huge] = A[huge] / np.sqrt(np.einsum("ij,ij->i", A[huge], A[huge],
                                                    dtype=np.float64))[:, None]
        return out

    def _prepare_vector(self, x: np.ndarray) -> np.ndarray | None:
        x32 = x.astype(np.float32, copy=False)  # (the division below makes the new array)
        x64 = x32.astype(np.float64)
        norm = math.sqrt(float(x64 @ x64))
        if not 0.0 < norm <= 3e38:  # zero, NaN, inf or huge: the full path says which
            return None
        return x32 / np.float32(norm)  # as _prepare divides

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.float32(1.0) - rows @ q

    def distances_many(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        return np.float32(1.0) - Q @ rows.T

    def distances_each(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        return np.float32(1.0) - np.matmul(rows, Q[:, :, None])[:, :, 0]


class L2(Metric):
    name = "l2"
    needs_norms = True
    families = ("pstable",)
    simhash_codes = True
    has_width = True
    pstable_distribution = "gaussian"
    float16_rows = True

    def ranking_distances(self, B: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        return norms[None, :] - 2.0 * (Q @ B.T)  # type: ignore[index,no-any-return]

    def neighbour_distances(self, Q: np.ndarray, N: np.ndarray) -> np.ndarray:
        return np.sqrt(((Q - N) ** 2).sum(-1))  # type: ignore[no-any-return]

    def code_centre(self, X: np.ndarray) -> np.ndarray | None:
        return X.mean(axis=0)  # type: ignore[no-any-return]

    product_form = True

    def product_distances(self, P: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        if norms is None:
            raise CorruptIndexError("an l2 scan needs the rows' norms")
        P *= np.float32(-2.0)
        P += norms
        P += np.einsum("ij,ij->i", Q, Q)[:, None]
        np.maximum(P, 0, out=P)
        return np.sqrt(P, out=P)

    def scan_margin(self, k: int) -> int:
        return 2 * k + 16  # the product's expansion loses precision to cancellation

    def _prepare_vector(self, x: np.ndarray) -> np.ndarray | None:
        return _finite_float32(x)

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        diff = rows - q
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))

    def distances_each(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        diff = rows - Q[:, None, :]
        return np.sqrt(np.einsum("bmd,bmd->bm", diff, diff))

    def distances_many(self, rows: np.ndarray, Q: np.ndarray) -> np.ndarray:
        sq = (np.einsum("ij,ij->i", rows, rows)[None, :] - 2 * (Q @ rows.T)
              + np.einsum("ij,ij->i", Q, Q)[:, None])
        return np.sqrt(np.maximum(sq, 0))


class L1(Metric):
    name = "l1"
    families = ("pstable", "unary")
    has_width = True
    float16_rows = True

    def _prepare_vector(self, x: np.ndarray) -> np.ndarray | None:
        return _finite_float32(x)

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.abs(rows - q).sum(axis=1)


class Hamming(Metric):
    name = "hamming"
    row_dtype = np.dtype(np.uint8)
    families = ("bitsample",)
    bit_input = True

    def ranking_distances(self, B: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        return _bit_distances(B, Q)

    def neighbour_scale(self, Q: np.ndarray, N: np.ndarray) -> float:
        return 1.0  # bit sampling has no width to scale

    @classmethod
    def input_dim(cls, columns: int) -> int:
        return 8 * columns  # packed bytes in, bits as the dimension

    def __init__(self, dim: int) -> None:
        if dim % 8:
            raise InvalidParameterError(
                f"hamming dim is the number of bits and must be a multiple of 8; found {dim}")
        super().__init__(dim)

    def row_dim(self) -> int:
        return self.dim // 8

    def _prepare(self, A: np.ndarray, what: str) -> np.ndarray:
        if A.dtype == np.bool_:
            if A.shape[1] != self.dim:
                raise DimensionMismatchError(
                    f"{what} have {A.shape[1]} bits; this index expects {self.dim}")
            return np.packbits(A, axis=1)
        if A.dtype != np.uint8:
            raise InvalidVectorError(
                f"{what} for metric hamming must be packed uint8 codes ({self.dim // 8} bytes "
                f"per row, np.packbits order) or bool bits; found dtype {A.dtype}")
        if A.shape[1] != self.dim // 8:
            raise DimensionMismatchError(
                f"{what} have {A.shape[1]} bytes per row; this index expects "
                f"{self.dim // 8} ({self.dim} bits)")
        return np.array(A, dtype=np.uint8, order="C")

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.bitwise_count(rows ^ q).sum(axis=1, dtype=np.int64).astype(np.float32)


class CosineCodes(Cosine):
    """Cosine with only a SimHash code stored per item (``store="codes"``, memory-light).

    The stored row is the item's ``bits``-bit code; distances are estimated from the
    Hamming distance ``h`` between codes as ``1 - cos(pi * h / bits)`` (the code of a
    vector is the sign pattern of ``bits`` random projections, so ``h / bits`` estimates
    the angle over pi). The original vectors are not kept: ``get`` returns the code.
    """

    row_dtype = np.dtype(np.uint8)

    def __init__(self, dim: int, bits: int, seed: int = 0) -> None:
        from ..hashing.codes import SimHashCoder

        super().__init__(dim)
        self.coder = SimHashCoder(dim, bits, seed)
        self.bits = bits

    def row_dim(self) -> int:
        return self.bits // 8

    def hash_dim(self) -> int:
        return self.bits

    def prepare(self, X: Any, what: str = "vectors") -> np.ndarray:
        return self.coder.encode(super().prepare(X, what))

    def prepare_one(self, x: Any, what: str = "query") -> np.ndarray:
        return self.coder.encode(super().prepare_one(x, what)[None])[0]

    def ranking_distances(self, B: np.ndarray, Q: np.ndarray,
                          norms: np.ndarray | None) -> np.ndarray:
        return _bit_distances(B, Q)  # the estimate grows with the codes' Hamming distance

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        from ..hashing.codes import hamming

        h = hamming(rows, q).astype(np.float64)
        return (1.0 - np.cos(np.pi * h / self.bits)).astype(np.float32)


def _as_array(X: Any, what: str) -> np.ndarray:
    try:
        A = np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise InvalidVectorError(
            f"{what} cannot be read as an array (ragged rows of different lengths?): {exc}"
        ) from exc
    if A.dtype == object:
        raise InvalidVectorError(f"{what} must be a numeric array; found ragged or object data")
    return A


def check_k(k: int | None) -> None:
    """Validate a query's ``k``: an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidParameterError(f"k must be an int >= 1; found {k!r}")


def _bit_distances(B: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Hamming distances between packed bit rows, ``(len(Q), len(B))`` float64."""
    return np.stack([np.bitwise_count(B ^ q).sum(1, dtype=np.int64)
                     for q in Q]).astype(np.float64)
