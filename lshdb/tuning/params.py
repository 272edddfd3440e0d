"""Options and default parameters: what ``create`` accepts and how unset values are chosen.

Build-time parameters (family, k, L, w) are fixed when the first batch is added: values the
caller left out are chosen from that batch (docs/tuning.md explains how).
Query-time settings (probes, candidates) are stored in the index and can be changed later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError
from ..hashing.families import BitSample, Family, Hyperplane, PStable, Unary
from ..metrics.dense import Metric
from ..metrics.registry import METRIC_NAMES, metric_class

__all__ = ["validate_options", "family_if_complete", "choose_family", "time_paths", "default_L",
           "query_settings", "validate_rows", "stale_calibration", "DEFAULT_FAMILY",
           "CALIBRATE_MIN", "RECALIBRATE_GROWTH"]

DEFAULT_FAMILY = {name: metric_class(name).families[0] for name in METRIC_NAMES}
_BUILD = {"family", "k", "L", "w", "seed", "max_value", "codes", "dtype"}
_JACCARD = {"family", "seed", "num_perm", "threshold", "bands", "rows", "mode", "scheme",
            "shingle", "store_tokens"}
_QUERY = {"probes", "candidates", "min_hits", "rerank", "scan"}
_OTHER = {"durability", "map_size", "target_recall", "store"}
NUM_PERM_MAX = 8192  # MinHash values per item, at most


def check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise InvalidParameterError(f"{name} must be an int in {lo}..{hi}; found {v!r}")
    return int(v)


def validate_options(metric: str, options: dict[str, Any], query_only: bool = False) -> dict[str, Any]:
    """Check option names and values; return a clean dict (unknown names are errors)."""
    cls = metric_class(metric) if metric in DEFAULT_FAMILY else None
    if cls is not None and cls.is_set:
        allowed = {"candidates"} if query_only else _JACCARD | {"candidates"} | _OTHER
    else:
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
            families = metric_class(metric).families
            if v not in families:
                raise InvalidParameterError(
                    f"family {v!r} does not serve metric {metric!r}; choose one of "
                    f"{', '.join(families)}")
            out[name] = v
        elif name == "k":
            out[name] = check_int("k", v, 1, 64)
        elif name == "L":
            out[name] = check_int("L", v, 1, 1000)
        elif name == "seed":
            out[name] = check_int("seed", v, 0, 2**63 - 1)
        elif name == "max_value":
            out[name] = check_int("max_value", v, 1, 2**24)
        elif name == "probes":
            out[name] = check_int("probes", v, 1, 1_000_000)
        elif name == "candidates":
            out[name] = check_int("candidates", v, 0, 2**32)
        elif name == "min_hits":
            out[name] = check_int("min_hits", v, 1, 1_000_000)
        elif name == "rerank":
            out[name] = check_int("rerank", v, 0, 2**32)
        elif name == "scan":
            out[name] = bool(v)
        elif name == "codes":
            out[name] = check_int("codes", v, 0, 4096)
            if out[name] % 64 or (out[name] and not metric_class(metric).simhash_codes):
                raise InvalidParameterError(
                    "codes are SimHash bits for cosine or l2 indexes, a multiple of 64 "
                    f"(e.g. 256); found {v!r} for metric {metric!r}")
        elif name == "map_size":
            out[name] = check_int("map_size", v, 1 << 16, 1 << 50)
        elif name == "w":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(v) or v <= 0:
                raise InvalidParameterError(f"w must be a positive number; found {v!r}")
            out[name] = float(v)
        elif name == "num_perm":
            out[name] = check_int("num_perm", v, 2, NUM_PERM_MAX)
        elif name in ("bands", "rows"):
            out[name] = check_int(name, v, 1, 8192)
        elif name == "threshold":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise InvalidParameterError(f"threshold must be in (0, 1]; found {v!r}")
            out[name] = float(v)
        elif name == "mode":
            if v not in ("oph", "classic"):
                raise InvalidParameterError(f"mode must be 'oph' or 'classic'; found {v!r}")
            out[name] = v
        elif name == "scheme":
            if v not in ("affine32", "affine64", "legacy"):
                raise InvalidParameterError(
                    f"scheme must be 'affine32', 'affine64' or 'legacy'; found {v!r}")
            out[name] = v
        elif name == "shingle":
            from ..hashing.shingles import parse_shingle

            kind, n = parse_shingle(v)
            out[name] = f"{kind}:{n}"
        elif name == "dtype":
            if v not in ("float32", "float16") or not metric_class(metric).float16_rows:
                raise InvalidParameterError(
                    f"dtype is 'float32' or 'float16' for cosine, l2 and l1 rows; found {v!r} "
                    f"for metric {metric!r}")
            out[name] = v
        elif name == "store_tokens":
            out[name] = bool(v)
        elif name == "store":
            if v not in ("vectors", "codes"):
                raise InvalidParameterError(f"store must be 'vectors' or 'codes'; found {v!r}")
            out[name] = v
        elif name == "target_recall":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise InvalidParameterError(f"target_recall must be in (0, 1); found {v!r}")
            out[name] = float(v)
        elif name == "durability":
            if v not in ("full", "fast"):
                raise InvalidParameterError(f"durability must be 'full' or 'fast'; found {v!r}")
            out[name] = v
    if out.get("store") == "codes":
        if not metric_class(metric).codes_only:
            raise InvalidParameterError("store='codes' keeps SimHash codes: metric cosine only")
        out.setdefault("codes", 256)
        if out.get("family", "bitsample") != "bitsample":
            raise InvalidParameterError("an index of codes hashes them by bit sampling; "
                                        "leave family unset")
        out["family"] = "bitsample"
    if out.get("dtype") == "float16" and out.get("store") == "codes":
        raise InvalidParameterError("store='codes' keeps no rows; dtype does not apply")
    if "w" in out and not metric_class(metric).has_width:
        raise InvalidParameterError(f"w is the p-stable width; metric {metric!r} has no width")
    family = out.get("family", DEFAULT_FAMILY[metric])
    if "max_value" in out and family != "unary":
        raise InvalidParameterError("max_value applies to family='unary' only")
    return out


CALIBRATE_MIN = 1000  # rows needed before parameters are chosen from the data
RECALIBRATE_GROWTH = 4  # live rows this many times those calibrated for (or a quarter of
#                         them) make the writer retune the index (a compaction)


def stale_calibration(calibrated_rows: int, live: int) -> bool:
    """True if an index calibrated on ``calibrated_rows`` live rows should choose again now
    that it holds ``live``: it grew or shrank by :data:`RECALIBRATE_GROWTH` times."""
    if calibrated_rows <= 0 or live < CALIBRATE_MIN:
        return False
    return live >= RECALIBRATE_GROWTH * calibrated_rows or \
        live * RECALIBRATE_GROWTH <= calibrated_rows


def default_L(metric: str, options: dict[str, Any]) -> int:
    """Number of tables when the caller gave none."""
    return metric_class(metric).default_tables(options)


# The share of the rows that the buckets would re-rank past which, before paths were
# costed (lshdb.paths), a default index chose the exact scan; shown as candidate_share.
SCAN_SHARE = 0.15


def query_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The query-time defaults stored in the index."""
    return {"probes": options.get("probes"), "candidates": options.get("candidates"),
            "min_hits": options.get("min_hits"), "rerank": options.get("rerank"),
            "scan": options.get("scan")}


def family_if_complete(metric: Metric, options: dict[str, Any]) -> Family | None:
    """The family, if the caller fixed every build-time parameter; else None (calibrate)."""
    name = options.get("family", DEFAULT_FAMILY[metric.name])
    if name == "minhash":
        from ..hashing.bands import MinHashBands

        o = metric.options  # type: ignore[attr-defined]
        return MinHashBands(metric.dim, o["rows"], o["bands"], int(o.get("seed", 0)))
    if "k" not in options:
        return None
    if name == "pstable" and "w" not in options:
        return None
    if name == "unary" and "max_value" not in options:
        return None
    return _build(metric, name, options, options["k"], options.get("w"))


def _build(metric: Metric, name: str, options: dict[str, Any], k: int, w: float | None) -> Family:
    L = default_L(metric.name, options)
    seed = options.get("seed", 0)
    if name == "hyperplane":
        return Hyperplane(metric.hash_dim(), k, L, seed)
    if name == "crosspolytope":
        from ..hashing.crosspolytope import CrossPolytope

        return CrossPolytope(metric.hash_dim(), k, L, seed)
    if name == "bitsample":
        return BitSample(metric.hash_dim(), k, L, seed)
    if name == "unary":
        return Unary(metric.hash_dim(), k, L, options["max_value"], seed)
    return PStable(metric.hash_dim(), k, L, float(w), seed,  # type: ignore[arg-type]
                   metric.pstable_distribution)


def choose_family(metric: Metric, options: dict[str, Any], X: np.ndarray,
                  rows: int | None = None) -> tuple[Family, dict[str, Any], dict[str, Any]]:
    """Calibrate the unset build parameters on ``X``, for an index of ``rows`` rows
    (default ``len(X)``; more when ``X`` samples a larger whole).

    Returns the family, query settings to store (the caller's own settings win) and a
    summary of the calibration for ``stats``.
    """
    from .calibration import calibrate

    name = options.get("family", DEFAULT_FAMILY[metric.name])
    target = options.get("target_recall", 0.9)
    n = max(rows or len(X), len(X))
    plan = calibrate(metric, name, options, X, target=target, rows=n)
    settings = query_settings(options)
    if settings["probes"] is None:
        settings["probes"] = plan.probes
    if settings["min_hits"] is None:
        settings["min_hits"] = plan.min_hits
    share = plan.candidates / max(n, 1)
    summary = {**plan.summary(), "sample_rows": len(X), "candidate_share": round(share, 4)}
    if settings["scan"] is None and metric.product_form \
            and metric.row_dtype.kind == "f" and not options.get("codes") \
            and plan.queries is not None and plan.neighbours is not None:
        from .paths import choose

        # every path on equal terms, with costs measured here (lshdb.paths)
        pick = choose(metric, X, plan.queries, plan.neighbours, n,
                      {"recall": plan.recall, "us": plan.micros}, target, 0.03,
                      allow_codes="codes" not in options, seed=options.get("seed", 0))
        settings["scan"] = pick["path"] != "buckets"
        if pick["codes"] and settings["rerank"] is None:
            settings["rerank"] = pick["rerank"]
            settings["rerank_for"] = [pick["rerank"], n]  # readers scale it as rows grow
        summary.update(path=pick["path"], codes=pick["codes"], paths=pick["paths"],
                       costs_us=pick["costs_us"])
    summary.update(scan=bool(settings["scan"]), live_rows=n,
                   calibrated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return plan.family, settings, summary


def time_paths(metric: Metric, options: dict[str, Any], n: int,
               timing: Callable[[], AbstractContextManager[Any]]) -> None:
    """Measure the paths' unit costs for ``n`` rows inside ``timing`` (the index's way of
    keeping BLAS on one thread, as queries run), before a calibration whose own work runs
    BLAS on every thread; :func:`choose_family` then finds them measured."""
    if metric.product_form and metric.row_dtype.kind == "f" \
            and options.get("scan") is None and not options.get("codes"):
        from .paths import costs

        costs(metric.row_dim(), metric.row_dtype.itemsize, n, timing)


def validate_rows(family: Family | None, X: np.ndarray, options: dict[str, Any]) -> None:
    """Family-specific checks on prepared rows (the unary family needs small integers)."""
    if isinstance(family, Unary):
        limit: int | None = family.max_value
    elif family is None and options.get("family") == "unary":
        limit = options.get("max_value")
    else:
        return
    if (X < 0).any() or (X != np.round(X)).any():
        raise InvalidVectorError(
            "family 'unary' takes non-negative integer vectors; found negative or "
            "fractional values")
    if limit is not None and X.max() > limit:
        raise InvalidVectorError(
            f"family 'unary' was built for values up to {limit}; found {X.max():g}. "
            "Create the index with a larger max_value")
