"""One calibration given to several new indexes: the shards of a sharded index share it.

:func:`choose_plan` calibrates on a sample for the size of the whole (the family, the query
settings, the hash codes), as an index calibrates on its first batch; :func:`write_plan`
stores it in a new, empty index (``create(..., plan=...)``), marked as managed from outside
(``managed_by``), so that the index does not retune itself as its own row count changes: a
shard holds a part of the rows, and choosing for its part alone would give the shards
different plans, and the whole another recall than the single index.
"""

from __future__ import annotations

from typing import Any

from ..hashing.codes import SimHashCoder
from ..metrics import Metric
from ..storage.codec import mark_format, pack_meta
from ..tuning import params
from .blas import for_rows, single_threaded

__all__ = ["choose_plan", "write_plan", "managed"]


def choose_plan(metric: Metric, options: dict[str, Any], sample: Any, rows: int,
                managed_by: str) -> dict[str, Any] | None:
    """The calibration of an index of ``rows`` rows, chosen on ``sample`` (vectors as
    given to ``add``), for indexes whose plan ``managed_by`` names the owner of; None when
    there is nothing to choose (the caller fixed every build parameter) or the sample is
    smaller than an index calibrates on.

    The plan is a dict of meta records (msgpack-able: it travels to Dask workers), and
    ``described``, the family as ``stats()`` shows it.
    """
    if params.family_if_complete(metric, options) is not None:
        return None
    X, _ = metric.prepare_items(sample)
    if len(X) < params.CALIBRATE_MIN:
        return None
    params.validate_rows(None, X, options)
    params.time_paths(metric, options, rows, single_threaded)
    with for_rows(len(X)):
        fam, settings, summary = params.choose_family(metric, options, X, rows=rows)
    params.validate_rows(fam, X, options)
    summary = {**summary, "sample_rows": len(X), "managed_by": managed_by}
    plan: dict[str, Any] = {"family": fam.params(), "settings": settings,
                            "calibration": summary, "codes": None,
                            "described": dict(fam.describe())}
    bits = int(summary.get("codes") or 0)
    if bits and "codes" not in options and options.get("store") != "codes":
        coder = SimHashCoder(metric.dim, bits, options.get("seed", 0), metric.code_centre(X))
        plan["codes"] = coder.params()
    return plan


def write_plan(txn: Any, meta: Any, plan: dict[str, Any]) -> int:
    """Store ``plan``'s records in a new index's meta database (inside its first
    transaction); returns the bytes per hash code the index must keep (0: none)."""
    txn.put(b"family", pack_meta(plan["family"]), db=meta)
    txn.put(b"settings", pack_meta(plan["settings"]), db=meta)
    txn.put(b"calibration", pack_meta(plan["calibration"]), db=meta)
    if plan.get("codes") is None:
        return 0
    txn.put(b"codes", pack_meta(plan["codes"]), db=meta)
    mark_format(txn, meta, 3)  # codes the calibration chose
    return int(plan["codes"]["bits"]) // 8


def managed(calibration: dict[str, Any] | None) -> bool:
    """True if an index's calibration record says its plan is chosen outside it (a shard:
    the sharded index's build chose it for all the shards)."""
    return bool(calibration and calibration.get("managed_by"))
