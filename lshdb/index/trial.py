"""Tuning before a build: measure query settings on a trial index made from sample rows.

``tune_rows(rows, metric)`` builds an index from ``rows`` in a temporary folder, tunes it as
:func:`lshdb.index.tune.tune` does, and removes it: the settings it reports are the ones a
build of the whole file would start from (``lshdb tune --input``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ..metrics import metric_class
from .index import create

__all__ = ["tune_rows"]


def tune_rows(rows: np.ndarray, metric: str, target_recall: float = 0.9, k: int = 10,
              n_queries: int = 200, seed: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """The tuning result (see :func:`~lshdb.index.tune.tune`) of a trial index built from
    ``rows``, with the build parameters the trial chose as ``"build"``.
    """
    rows = np.asarray(rows)
    tmp = tempfile.mkdtemp(prefix="lshdb-tune-")
    try:
        with create(os.path.join(tmp, "trial.lshdb"), metric=metric,
                    dim=metric_class(metric).input_dim(rows.shape[1]),
                    target_recall=target_recall) as index:
            index.add(range(len(rows)), rows)
            build = index.family.describe() if index.family else None
            result = index.tune(target_recall, k, n_queries, seed, progress=progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**result, "build": build}
