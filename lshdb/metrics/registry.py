"""The metrics by name, registered here explicitly: ``get_metric`` builds one for an index."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from .dense import L1, L2, Cosine, CosineCodes, Hamming, Metric
from .sets import JaccardMetric

__all__ = ["METRICS", "METRIC_NAMES", "get_metric", "metric_class"]

METRICS: dict[str, type[Metric]] = {"cosine": Cosine, "l2": L2, "l1": L1, "hamming": Hamming}
METRIC_NAMES = sorted([*METRICS, "jaccard"])


def metric_class(name: str) -> type[Metric]:
    """The class of the metric ``name`` (its class attributes describe it before an index
    exists: ``is_set``, ``takes_dim``, ``score_field``, ``input_dim``)."""
    if name == "jaccard":
        return JaccardMetric
    cls = METRICS.get(name)
    if cls is None:
        raise InvalidParameterError(
            f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}")
    return cls


def get_metric(name: str, dim: int | None, options: dict[str, Any] | None = None) -> Metric:
    """The metric ``name`` for ``dim``-dimensional items with the index's ``options``."""
    if name == "jaccard":
        opts = dict(options or {})
        if dim is not None:
            if opts.get("num_perm", dim) != dim:
                raise InvalidParameterError(
                    f"dim {dim} and num_perm {opts['num_perm']} disagree; give one of them")
            opts["num_perm"] = dim
        return JaccardMetric(opts)
    cls = METRICS.get(name)
    if cls is None:
        raise InvalidParameterError(
            f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}")
    if dim is None:
        raise InvalidParameterError(f"metric {name!r} needs dim")
    if options and options.get("store") == "codes":
        if name != "cosine":
            raise InvalidParameterError("store='codes' keeps SimHash codes: metric cosine only")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= 65536:
            raise InvalidParameterError(f"dim must be an int in 1..65536; found {dim!r}")
        return CosineCodes(int(dim), int(options.get("codes") or 256), int(options.get("seed", 0)))
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= 65536:
        raise InvalidParameterError(f"dim must be an int in 1..65536; found {dim!r}")
    m = cls(int(dim))
    if options and options.get("dtype") == "float16":
        m.row_dtype = np.dtype("<f2")  # rows kept at half precision; distances in float32
    return m


