"""Options and default parameters: what ``create`` accepts and how unset values are chosen.

Build-time parameters (family, k, L, w) are fixed when the first batch is added: values the
caller left out are chosen from that batch (the README's tuning section explains how).
Query-time settings (probes, candidates) are stored in the index and can be changed later.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidParameterError, InvalidVectorError
from .families import BitSample, Family, Hyperplane, PStable, Unary
from .metrics import Metric

__all__ = ["validate_options", "family_if_complete", "choose_family", "default_L",
           "query_settings", "validate_rows", "DEFAULT_FAMILY"]

DEFAULT_FAMILY = {"cosine": "hyperplane", "l2": "pstable", "l1": "pstable",
                  "hamming": "bitsample"}
_FAMILIES_OF = {"cosine": ("hyperplane",), "l2": ("pstable",), "l1": ("pstable", "unary"),
                "hamming": ("bitsample",)}
_BUILD = {"family", "k", "L", "w", "seed", "max_value"}
_QUERY = {"probes", "candidates"}
_OTHER = {"durability", "map_size"}


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise InvalidParameterError(f"{name} must be an int in {lo}..{hi}; found {v!r}")
    return int(v)


def validate_options(metric: str, options: dict[str, Any], query_only: bool = False) -> dict[str, Any]:
    """Check option names and values; return a clean dict (unknown names are errors)."""
    allowed = _QUERY if query_only else _BUILD | _QUERY | _OTHER
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidParameterError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid options are {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    for name, v in options.items():
        if v is None:
            continue
        if name == "family":
            if v not in _FAMILIES_OF[metric]:
                raise InvalidParameterError(
                    f"family {v!r} does not serve metric {metric!r}; choose one of "
                    f"{', '.join(_FAMILIES_OF[metric])}")
            out[name] = v
        elif name == "k":
            out[name] = _int("k", v, 1, 64)
        elif name == "L":
            out[name] = _int("L", v, 1, 1000)
        elif name == "seed":
            out[name] = _int("seed", v, 0, 2**63 - 1)
        elif name == "max_value":
            out[name] = _int("max_value", v, 1, 2**24)
        elif name == "probes":
            out[name] = _int("probes", v, 1, 1_000_000)
        elif name == "candidates":
            out[name] = _int("candidates", v, 0, 2**32)
        elif name == "map_size":
            out[name] = _int("map_size", v, 1 << 16, 1 << 50)
        elif name == "w":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(v) or v <= 0:
                raise InvalidParameterError(f"w must be a positive number; found {v!r}")
            out[name] = float(v)
        elif name == "durability":
            if v not in ("full", "fast"):
                raise InvalidParameterError(f"durability must be 'full' or 'fast'; found {v!r}")
            out[name] = v
    if "w" in out and metric not in ("l2", "l1"):
        raise InvalidParameterError(f"w is the p-stable width; metric {metric!r} has no width")
    family = out.get("family", DEFAULT_FAMILY[metric])
    if "max_value" in out and family != "unary":
        raise InvalidParameterError("max_value applies to family='unary' only")
    if family == "unary" and "k" in out and "L" in out and "max_value" not in out:
        pass  # max_value is then read from the first batch
    return out


def default_L(metric: str, options: dict[str, Any]) -> int:
    """Number of tables when the caller gave none."""
    return int(options.get("L", 16))


def _default_k(metric: str, family: str, dim: int, n: int) -> int:
    if family == "hyperplane":
        return 16
    if family == "bitsample":
        return max(1, min(64, dim // 16, 24))
    if family == "unary":
        return 16
    return 8


def query_settings(options: dict[str, Any]) -> dict[str, Any]:
    return {"probes": options.get("probes"), "candidates": options.get("candidates")}


def family_if_complete(metric: Metric, options: dict[str, Any]) -> Family | None:
    """The family, if every parameter it needs is known before any data arrives."""
    family = options.get("family", DEFAULT_FAMILY[metric.name])
    if family == "pstable" and "w" not in options:
        return None
    if family == "unary" and "max_value" not in options:
        return None
    return choose_family(metric, options, None)


def choose_family(metric: Metric, options: dict[str, Any], X: np.ndarray | None) -> Family:
    """Build the family from the options, filling unset parameters from the batch ``X``."""
    name = options.get("family", DEFAULT_FAMILY[metric.name])
    n = len(X) if X is not None else 0
    k = options.get("k") or _default_k(metric.name, name, metric.dim, n)
    L = default_L(metric.name, options)
    seed = options.get("seed", 0)
    if name == "hyperplane":
        return Hyperplane(metric.dim, k, L, seed)
    if name == "bitsample":
        return BitSample(metric.dim, k, L, seed)
    if name == "unary":
        max_value = options.get("max_value")
        if max_value is None:
            if X is None:
                raise InvalidParameterError("family 'unary' needs max_value or data")
            max_value = max(1, int(np.ceil(X.max())))
        return Unary(metric.dim, k, L, max_value, seed)
    w = options.get("w")
    if w is None:
        if X is None:
            raise InvalidParameterError("family 'pstable' needs w or data to choose it from")
        w = estimate_width(X, metric.name)
    return PStable(metric.dim, k, L, w, seed, "gaussian" if metric.name == "l2" else "cauchy")


def estimate_width(X: np.ndarray, metric: str, seed: int = 0) -> float:
    """A p-stable width from the data: a multiple of the typical nearest-neighbour distance."""
    rng = np.random.default_rng(seed)
    m = min(len(X), 2000)
    S = X[rng.choice(len(X), m, replace=False)] if len(X) > m else X
    q = S[: min(100, m)]
    if metric == "l2":
        D = np.sqrt(np.maximum(
            (q * q).sum(1)[:, None] - 2 * q @ S.T + (S * S).sum(1)[None, :], 0))
    else:
        D = np.abs(q[:, None, :] - S[None, :, :]).sum(-1)
    D[np.arange(len(q)), np.arange(len(q))] = np.inf
    nn = np.sort(D, axis=1)[:, : min(10, m - 1)] if m > 1 else np.ones((1, 1))
    scale = float(np.median(nn[np.isfinite(nn)])) if np.isfinite(nn).any() else 1.0
    return max(scale, 1e-6) * 2.0


def validate_rows(family: Family, X: np.ndarray) -> None:
    """Family-specific checks on prepared rows (the unary family needs small integers)."""
    if isinstance(family, Unary):
        if (X < 0).any() or (X != np.round(X)).any():
            raise InvalidVectorError(
                "family 'unary' takes non-negative integer vectors; found negative or "
                "fractional values")
        if X.max() > family.max_value:
            raise InvalidVectorError(
                f"family 'unary' was built for values up to {family.max_value}; found "
                f"{X.max():g}. Create the index with a larger max_value")
