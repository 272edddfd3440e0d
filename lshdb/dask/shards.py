"""Building sharded vector indexes on Dask (:mod:`lshdb.index.sharded` reads them).

Every shard has the same family, parameters, seed and query settings: :func:`build_sharded`
calibrates once, on the sample a single build of the same input ends up calibrated on, for
the size of the whole index (:func:`lshdb.index.plan.choose_plan`), and creates each shard
with that plan (a calibrated family's functions depend on the calibration, not only on its
parameters); a shard never retunes on its own row count. Each shard is filled, one task per
shard on the workers, with the rows routed to it (:func:`lshdb.index.sharded.route`), read
from the input by row where its format allows (a ``.npy`` file is memory-mapped). The
manifest is written last, into a folder built under a temporary name and renamed into
place, so a failed build leaves no sharded index.

Thread safety: one build at a time per target folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from typing import Any

import numpy as np

from ..errors import IndexExistsError, InvalidParameterError
from ..index.compact import RETUNE_SAMPLE
from ..index.index import create
from ..index.plan import choose_plan
from ..index.sharded import (
    FORMAT,
    MANIFEST,
    VERSION,
    ShardedIndex,
    check_sharded,
    is_sharded,
    open_sharded,
    route,
)
from ..metrics import get_metric, metric_class
from ..tuning import params

__all__ = ["MANIFEST", "ShardedIndex", "is_sharded", "open_sharded", "build_sharded", "route",
           "check_sharded"]

_CALIBRATION_ROWS = 65536  # the first block a single `lshdb build` calibrates on
_BLOCK = 65536


# -- building -------------------------------------------------------------------------


def _build_shard(path: str, spec: dict[str, Any], source: dict[str, Any], shard: int,
                 n_shards: int) -> int:
    """Create shard ``shard`` at ``path`` with the build's plan and add the rows routed to
    it; returns their count."""
    from ..io.inputs import open_vectors, read_keys

    src = open_vectors(source["input"], source["key_field"], source["vector_field"])
    keys: Any = read_keys(source["keys_file"]) if source.get("keys_file") else src.keys
    n = len(src)
    if keys is None:
        keys = np.arange(n, dtype=np.int64)  # row numbers: routed in one vectorised pass
    mine = np.flatnonzero(route(keys, n_shards) == shard)
    with create(path, metric=spec["metric"], dim=spec["dim"], plan=spec["plan"],
                **spec["options"]) as ix, ix.writer() as w:
        for s in range(0, len(mine), _BLOCK):
            rows = mine[s : s + _BLOCK]
            ks = keys[rows].tolist() if isinstance(keys, np.ndarray) else \
                [keys[i] for i in rows.tolist()]
            w.add(ks, src.rows(rows))
    return len(mine)


def _shard_settings(settings: dict[str, Any], shards: int) -> dict[str, Any]:
    """A shard's query settings under the whole index's: a cap on the candidates re-ranked
    (``rerank`` of a code scan, ``candidates``) becomes the shard's share of it, so that
    the fan-out re-ranks about as many as the single index would, not ``shards`` times
    more. The share is R/S plus one standard deviation of how many of the whole's best R a
    shard holds (about sqrt(R/S)): with R/S alone a shard that holds more than its share
    drops some, and the fan-out's recall falls below the single index's."""
    out = dict(settings)
    if shards > 1:
        for name in ("rerank", "candidates"):
            if out.get(name):
                share = int(out[name]) / shards
                out[name] = math.ceil(share + math.sqrt(share))
    return out


def build_sharded(path: str | os.PathLike[str], input_path: str, metric: str, shards: int,
                  client: Any = None, keys_file: str | None = None, key_field: str = "key",
                  vector_field: str = "vector", **options: Any) -> dict[str, Any]:
    """Build a sharded index of the vectors in ``input_path`` (formats as ``lshdb build``).

    Chooses once the plan a single build of the input ends with (calibrated on the first
    65,536 rows; when the input holds 4 times as many, on a sample of up to 1,000,000 rows
    of it, for all its rows, as the single build's retune does); creates ``shards`` shard
    indexes with that plan, and fills each with the rows routed to it: on ``client``'s
    workers when given (one task per shard, each reading its rows of the input itself),
    else here in turn.

    Raises
    ------
    IndexExistsError
        ``path`` exists and is not empty.
    InvalidParameterError
        ``shards`` below 1, or an option the index rejects.
    """
    from ..io.inputs import open_vectors

    path = os.fspath(path)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 4096:
        raise InvalidParameterError(f"shards must be an int in 1..4096; found {shards!r}")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise IndexExistsError(f"{path} already exists; choose a new path")
    t0 = time.perf_counter()
    src = open_vectors(input_path, key_field, vector_field)
    dim = metric_class(metric).input_dim(src.dim)
    opts = params.validate_options(metric, options)
    m = get_metric(metric, dim, opts)
    n_rows = len(src)
    sample = next(src.blocks(_CALIBRATION_ROWS))[1]
    planned = len(sample)
    if params.stale_calibration(planned, n_rows):
        # a single build would retune once loaded, on a sample of the whole (the same)
        sample, planned = src.sample(RETUNE_SAMPLE), n_rows
    plan = choose_plan(m, m.stored_options(opts), sample, planned, MANIFEST)
    del src, sample
    if plan is not None:
        plan["settings"] = _shard_settings(plan["settings"], shards)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(path)}.building-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        names = [f"shard-{s:04d}.lshdb" for s in range(shards)]
        source = {"input": os.path.abspath(input_path), "key_field": key_field,
                  "vector_field": vector_field,
                  "keys_file": os.path.abspath(keys_file) if keys_file else None}
        spec = {"metric": metric, "dim": dim, "options": options, "plan": plan}
        args = [(os.path.join(tmp, nm), spec, source, s, shards) for s, nm in enumerate(names)]
        if client is not None:
            counts = client.gather([client.submit(_build_shard, *a, pure=False) for a in args])
        else:
            counts = [_build_shard(*a) for a in args]
        manifest = {"format": FORMAT, "version": VERSION, "metric": metric, "dim": dim,
                    "route": "splitmix64-int-or-blake2b64-msgpack-mod", "shards": names,
                    "rows": n_rows, "plan_rows": planned if plan else None,
                    "created": time.time()}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(path):
            os.rmdir(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": path, "metric": metric, "dim": dim, "shards": shards,
            "family": plan["described"] if plan else {},
            "plan_rows": planned if plan else None,
            "added": int(sum(counts)), "per_shard": [int(c) for c in counts],
            "seconds": round(time.perf_counter() - t0, 3)}
