"""Building sharded vector indexes on Dask (:mod:`lshdb.index.sharded` reads them).

Every shard has the same family, parameters and seed: :func:`build_sharded` calibrates once,
on the same first block of rows a single build would calibrate on, empties that index and
copies it as each shard (a calibrated family's functions depend on the calibration, not
only on its parameters), then fills each shard, one task per shard on the workers, with the
rows routed to it (:func:`lshdb.index.sharded.route`). The manifest is written last, into a
folder built under a temporary name and renamed into place, so a failed build leaves no
sharded index.

Thread safety: one build at a time per target folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any

import numpy as np

from ..errors import IndexExistsError, InvalidParameterError
from ..index.index import create
from ..index.index import open as open_index
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
from ..metrics import metric_class

__all__ = ["MANIFEST", "ShardedIndex", "is_sharded", "open_sharded", "build_sharded", "route",
           "check_sharded"]

_CALIBRATION_ROWS = 65536  # the first block a single `lshdb build` calibrates on


# -- building -------------------------------------------------------------------------


def _build_shard(path: str, template: str, source: dict[str, Any], shard: int,
                 n_shards: int) -> int:
    """Copy the empty calibrated ``template`` to ``path`` and add the rows routed to shard
    ``shard``; returns their count."""
    from ..io.inputs import open_vectors, read_keys

    src = open_vectors(source["input"], source["key_field"], source["vector_field"])
    keys = read_keys(source["keys_file"]) if source.get("keys_file") else src.keys
    shutil.copytree(template, path)
    n = 0
    with open_index(path) as ix, ix.writer() as w:
        for s, X in src.blocks(65536):
            ks: Any = list(keys[s:s + len(X)]) if keys is not None else range(s, s + len(X))
            mine = np.flatnonzero(route(ks, n_shards) == shard)
            if len(mine):
                w.add([ks[i] for i in mine.tolist()], np.asarray(X)[mine])
                n += len(mine)
    return n


def _calibrated_template(path: str, metric: str, dim: int, sample: np.ndarray,
                         options: dict[str, Any]) -> dict[str, Any]:
    """An empty index at ``path`` whose family and query settings were calibrated on
    ``sample`` (added, deleted and compacted away): the family's functions depend on the
    calibration, not only on its parameters, so the shards copy it whole."""
    with create(path, metric=metric, dim=dim, **options) as cal:
        cal.add(range(len(sample)), sample)
        cal.delete(range(len(sample)))
        cal.compact()
        return dict(cal.family.describe()) if cal.family else {}


def build_sharded(path: str | os.PathLike[str], input_path: str, metric: str, shards: int,
                  client: Any = None, keys_file: str | None = None, key_field: str = "key",
                  vector_field: str = "vector", **options: Any) -> dict[str, Any]:
    """Build a sharded index of the vectors in ``input_path`` (formats as ``lshdb build``).

    Calibrates once on the first 65,536 rows, creates ``shards`` shard indexes with those
    parameters fixed, and fills each with the rows routed to it: on ``client``'s workers
    when given (one task per shard, each reading the input itself), else here in turn.

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
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(path)}.building-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        sample = np.asarray(next(src.blocks(_CALIBRATION_ROWS))[1])
        template = os.path.join(tmp, "calibration.lshdb")
        family = _calibrated_template(template, metric, dim, sample, options)
        del sample, src
        names = [f"shard-{s:04d}.lshdb" for s in range(shards)]
        source = {"input": os.path.abspath(input_path), "key_field": key_field,
                  "vector_field": vector_field,
                  "keys_file": os.path.abspath(keys_file) if keys_file else None}
        args = [(os.path.join(tmp, nm), template, source, s, shards)
                for s, nm in enumerate(names)]
        if client is not None:
            counts = client.gather([client.submit(_build_shard, *a, pure=False) for a in args])
        else:
            counts = [_build_shard(*a) for a in args]
        shutil.rmtree(template)
        manifest = {"format": FORMAT, "version": VERSION, "metric": metric, "dim": dim,
                    "route": "splitmix64-int-or-blake2b64-msgpack-mod", "shards": names,
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
            "family": family,
            "added": int(sum(counts)), "per_shard": [int(c) for c in counts],
            "seconds": round(time.perf_counter() - t0, 3)}
