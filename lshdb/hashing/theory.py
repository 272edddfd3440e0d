"""LSH theory: collision probabilities, amplification, S-curves and parameter optimisers.

Collision probability of one hash function, as a function of distance or similarity:

==================  ===============================================  ======================
family              P[h(x) = h(y)]                                   argument
==================  ===============================================  ======================
hyperplane          1 - theta / pi                                   cosine similarity s
gaussian p-stable   1 - 2 Phi(-1/c) - 2c/sqrt(2 pi) (1 - e^(-1/2c^2))  c = ||x - y||_2 / w
cauchy p-stable     (2/pi) atan(1/c) - (c/pi) ln(1 + 1/c^2)          c = ||x - y||_1 / w
minhash             s                                                Jaccard similarity s
bit sampling        1 - d / D                                        Hamming distance d
unary (1999)        1 - d / (dim * C)                                l1 distance d
==================  ===============================================  ======================

(the p-stable formulas are Datar, Immorlica, Indyk and Mirrokni 2004, with w = 1 after
scaling the distance). Amplification: AND of k functions maps p to p**k, OR of L tables
maps p to 1 - (1 - p)**L, and compositions nest: ``compose(p, [("or", 4), ("and", 8)])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidParameterError

__all__ = [
    "p_hyperplane", "p_gaussian", "p_cauchy", "p_minhash", "p_bitsample", "p_unary",
    "and_", "or_", "s_curve", "compose", "sensitivity", "band_threshold",
    "false_positive_area", "false_negative_area", "optimal_bands", "collision",
    "family_curve",
]

ArrayLike = float | np.ndarray | Sequence[float]
Step = tuple[str, int]

_erf = np.vectorize(math.erf, otypes=[float])


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray, like: ArrayLike) -> ArrayLike:
    return float(x) if np.ndim(like) == 0 else x


def p_hyperplane(similarity: ArrayLike) -> ArrayLike:
    """Random-hyperplane collision probability at cosine similarity ``similarity``."""
    s = np.clip(_arr(similarity), -1.0, 1.0)
    return _out(1.0 - np.arccos(s) / np.pi, similarity)


def p_gaussian(c: ArrayLike) -> ArrayLike:
    """Gaussian p-stable collision probability at ``c = l2 distance / w``."""
    c = _arr(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / c
        phi = 0.5 * (1.0 + _erf(-inv / math.sqrt(2.0)))
        p = 1.0 - 2.0 * phi - 2.0 * c / math.sqrt(2.0 * math.pi) * (1.0 - np.exp(-0.5 * inv * inv))
    p = np.where(c <= 0, 1.0, p)
    return _out(np.clip(p, 0.0, 1.0), c)


def p_cauchy(c: ArrayLike) -> ArrayLike:
    """Cauchy p-stable collision probability at ``c = l1 distance / w``."""
    c = _arr(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 / np.pi * np.arctan(1.0 / c) - c / np.pi * np.log1p(1.0 / (c * c))
    p = np.where(c <= 0, 1.0, p)
    return _out(np.clip(p, 0.0, 1.0), c)


def p_minhash(similarity: ArrayLike) -> ArrayLike:
    """MinHash collision probability: the Jaccard similarity itself."""
    return _out(np.clip(_arr(similarity), 0.0, 1.0), similarity)


def p_bitsample(distance: ArrayLike, n_bits: int) -> ArrayLike:
    """Bit-sampling collision probability at Hamming distance ``distance`` of ``n_bits``."""
    return _out(np.clip(1.0 - _arr(distance) / n_bits, 0.0, 1.0), distance)


def p_unary(distance: ArrayLike, dim: int, max_value: int) -> ArrayLike:
    """Unary-embedding collision probability at l1 distance (values in 0..max_value)."""
    return _out(np.clip(1.0 - _arr(distance) / (dim * max_value), 0.0, 1.0), distance)


def collision(family: str, x: ArrayLike, **kw: float) -> ArrayLike:
    """Collision probability of a family by name (``w`` rescales p-stable distances)."""
    if family == "hyperplane":
        return p_hyperplane(x)
    if family in ("gaussian", "cauchy"):
        w = kw.get("w", 1.0)
        f = p_gaussian if family == "gaussian" else p_cauchy
        return f(_arr(x) / w) if np.ndim(x) else f(float(_arr(x)) / w)
    if family == "minhash":
        return p_minhash(x)
    if family == "bitsample":
        return p_bitsample(x, int(kw["n_bits"]))
    if family == "unary":
        return p_unary(x, int(kw["dim"]), int(kw["max_value"]))
    raise InvalidParameterError(f"unknown family {family!r}")


# -- amplification --------------------------------------------------------------------


def and_(p: ArrayLike, k: int) -> ArrayLike:
    """AND of ``k`` independent functions: all must collide."""
    return _out(_arr(p) ** k, p)


def or_(p: ArrayLike, L: int) -> ArrayLike:
    """OR of ``L`` independent tables: at least one must collide."""
    return _out(1.0 - (1.0 - _arr(p)) ** L, p)


def s_curve(p: ArrayLike, k: int, L: int) -> ArrayLike:
    """Probability of becoming a candidate with ``L`` tables of ``k`` functions."""
    return _out(1.0 - (1.0 - _arr(p) ** k) ** L, p)


def compose(p: ArrayLike, steps: Sequence[Step]) -> ArrayLike:
    """Apply AND/OR steps in order, e.g. ``[("or", 4), ("and", 8)]`` (OR first, then AND)."""
    q = _arr(p)
    for op, n in steps:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidParameterError(f"composition step {op!r} needs a count >= 1; found {n!r}")
        if op == "and":
            q = q**n
        elif op == "or":
            q = 1.0 - (1.0 - q) ** n
        else:
            raise InvalidParameterError(f"composition steps are 'and' or 'or'; found {op!r}")
    return _out(q, p)


def sensitivity(p1: float, p2: float, steps: Sequence[Step]) -> tuple[float, float]:
    """A (d1, d2, p1, p2)-sensitive family composed by ``steps`` is (d1, d2, p1', p2')."""
    return float(_arr(compose(p1, steps))), float(_arr(compose(p2, steps)))


def band_threshold(b: int, r: int) -> float:
    """Similarity at which ``b`` bands of ``r`` rows are steepest: (1/b) ** (1/r)."""
    return float((1.0 / b) ** (1.0 / r))


# -- banding optimiser ----------------------------------------------------------------

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)


def _integrate(f: object, a: float, b: float) -> float:
    if b <= a:
        return 0.0
    # Gauss-Legendre over 8 panels: the S-curve is smooth, so this matches adaptive quadrature
    edges = np.linspace(a, b, 9)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        x = 0.5 * (hi - lo) * _NODES + 0.5 * (hi + lo)
        total += 0.5 * (hi - lo) * float(np.dot(_WEIGHTS, f(x)))  # type: ignore[operator]
    return total


def false_positive_area(threshold: float, b: int, r: int) -> float:
    """Area under the S-curve below the threshold: pairs below it that still collide."""
    return _integrate(lambda s: 1.0 - (1.0 - s**r) ** b, 0.0, threshold)


def false_negative_area(threshold: float, b: int, r: int) -> float:
    """Area above the S-curve above the threshold: pairs above it that are missed."""
    return _integrate(lambda s: (1.0 - s**r) ** b, threshold, 1.0)


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` (b * r <= num_perm) minimising the weighted error areas."""
    if not 0.0 < threshold <= 1.0:
        raise InvalidParameterError(f"threshold must be in (0, 1]; found {threshold!r}")
    if not isinstance(num_perm, (int, np.integer)) or num_perm < 2:
        raise InvalidParameterError(f"num_perm must be an int >= 2; found {num_perm!r}")
    if fp_weight < 0 or fn_weight < 0 or fp_weight + fn_weight <= 0:
        raise InvalidParameterError("fp_weight and fn_weight must be >= 0 and not both 0")
    best, best_err = (1, 1), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = (fp_weight * false_positive_area(threshold, b, r)
                   + fn_weight * false_negative_area(threshold, b, r))
            if err < best_err:
                best, best_err = (b, r), err
    return best


# -- the S-curve of an index's parameters ------------------------------------------------


def family_curve(params: dict[str, object], dim: int, points: int = 11
                 ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """The S-curve of a family's stored parameters (``Family.describe()``).

    Returns ``(axis, x, p, s)``: what ``x`` measures (cosine similarity, distance in units of
    w, Hamming or l1 distance, Jaccard similarity), the per-function collision probability
    ``p`` at each ``x`` and the probability ``s = 1 - (1 - p^k)^L`` of becoming a candidate
    through the home buckets (multi-probe raises it further).
    """
    name = params["family"]
    k, L = int(params["k"]), int(params["L"])  # type: ignore[call-overload]
    if name == "hyperplane":
        axis, x = "cosine similarity", np.linspace(0.0, 1.0, points)
        p = _arr(p_hyperplane(x))
    elif name == "crosspolytope":
        from .crosspolytope import collision_probability

        axis, x = "cosine similarity", np.linspace(0.0, 1.0, points)
        p = np.asarray(collision_probability(x, dim, samples=4000), dtype=np.float64)
    elif name == "pstable":
        axis, x = "distance / w", np.linspace(0.0, 2.0, points)
        f = p_gaussian if params.get("distribution") == "gaussian" else p_cauchy
        p = _arr(f(np.maximum(x, 1e-9)))
    elif name == "bitsample":
        axis, x = "Hamming distance / bits", np.linspace(0.0, 1.0, points)
        p = 1.0 - x
    elif name == "unary":
        axis, x = "l1 distance / (dim * max_value)", np.linspace(0.0, 1.0, points)
        p = 1.0 - x
    elif name == "minhash":
        axis, x = "Jaccard similarity", np.linspace(0.0, 1.0, points)
        p = x.copy()
    else:
        raise InvalidParameterError(f"no S-curve for family {name!r}")
    return axis, x, p, _arr(s_curve(p, k, L))
