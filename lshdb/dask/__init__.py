"""Past one machine, on Dask: distributed dedup, sharded vector indexes, fan-out queries.

``lshdb.dask.dedup(frame, text=..., key=...)`` deduplicates a Dask DataFrame of documents on a
cluster and returns lazy Dask DataFrames of pairs and clusters, identical to the
single-process :func:`lshdb.text.dedup.dedup` for the same options and seed
(:mod:`lshdb.dask.dedup`). ``lshdb.dask.build_sharded`` writes a vector index as S ordinary
shard indexes under one folder with a manifest; ``lshdb.open`` on that folder returns a
:class:`ShardedIndex` that fans each query out and merges the top-k (:mod:`lshdb.dask.shards`).

Dask is the optional extra ``lshdb[dask]``: it is imported only when a function needs it
(reading a sharded index needs no Dask at all).
"""

from __future__ import annotations

from typing import Any

from .client import connect, require
from .dedup import DedupFrames, dedup, match_index
from .shards import MANIFEST, ShardedIndex, build_sharded, is_sharded, open_sharded

__all__ = ["DedupFrames", "dedup", "match_index", "write_dedup", "connect", "require", "ShardedIndex",
           "build_sharded", "open_sharded", "is_sharded", "MANIFEST"]


def write_dedup(frame: Any, **options: Any) -> dict[str, Any]:
    """See :func:`lshdb.dask.outputs.write_dedup`."""
    from .outputs import write_dedup as _write

    return _write(frame, **options)
