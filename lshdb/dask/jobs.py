"""Whole dedup jobs on a cluster, as the ``lshdb dedup --dask`` command runs them.

:func:`run_dedup` connects to a scheduler (``local:N`` or an address), reads the inputs,
and either deduplicates them within themselves (pairs and clusters) or, with ``against``,
matches them against a persistent jaccard index (each worker opens it read-only). With
``add_to`` it then adds the survivors, the documents that a deduplicated collection keeps
(the first of each cluster and every document in none, but the empty ones) and that
matched nothing in ``against``, to a jaccard index through its one writer, here on the
client, a partition at a time: next month's run checks against this month's.

Thread safety: one job at a time per process (it owns its client).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputFormatError
from .client import connect, require
from .outputs import read_documents, write_results

__all__ = ["run_dedup", "block_bytes", "PARTS_PER_WORKER"]


def _survivors(part: Any, p: int, key: str, text: str, nodes: np.ndarray, roots: np.ndarray,
               matched: set[Any]) -> tuple[list[Any], list[str]]:
    """The documents of partition ``p`` that a deduplicated collection keeps (but the
    empty ones, which have no MinHash to store)."""
    ids = (np.uint64(p) << np.uint64(32)) | np.arange(len(part), dtype=np.uint64)
    at = np.minimum(np.searchsorted(nodes, ids), max(len(nodes) - 1, 0))
    dropped = (nodes[at] == ids) & (roots[at] != ids) if len(nodes) else np.zeros(len(ids), bool)
    keys, texts = part[key].tolist(), part[text].tolist()
    keep = [i for i in np.flatnonzero(~dropped).tolist()
            if keys[i] not in matched and texts[i].split()]
    return [keys[i] for i in keep], [texts[i] for i in keep]


PARTS_PER_WORKER = 4  # enough for a worker to balance; more adds tasks and transfers


def block_bytes(inputs: list[str], workers: int) -> int:
    """JSON-lines blocks of 1/:data:`PARTS_PER_WORKER` of the input per worker: each
    worker has a few to balance, while the band rounds (partitions x buckets transfers)
    and the verification (partitions x partitions) stay few tasks; between 1 and 64 MB."""
    import glob
    import os

    total = sum(os.path.getsize(f) for spec in inputs for f in (glob.glob(spec) or [spec])
                if os.path.isfile(f))
    return max(1 << 20, min(64 << 20, total // (PARTS_PER_WORKER * max(workers, 1)) + 1))


def run_dedup(inputs: list[str], scheduler: str, key: str = "id", text: str = "text",
              pairs: str | None = None, clusters: str | None = None,
              against: str | None = None, add_to: str | None = None,
              **options: Any) -> dict[str, Any]:
    """Run a dedup job on Dask and write its outputs; returns a summary.

    ``options`` go to :func:`lshdb.dask.dedup.dedup` (``threshold`` and ``verify`` also to
    the match against ``against``).
    """
    from ..index.index import open as open_index
    from .dedup import dedup, match_index

    dask = require("dataframe")

    t0 = time.perf_counter()
    if add_to is not None:
        with open_index(add_to, readonly=True) as ix:
            if not ix.metric.is_set:
                raise InputFormatError(f"{add_to} is a {ix.metric.name} index, not jaccard")
    with connect(scheduler) as client:
        workers = len(client.scheduler_info()["workers"])
        frame = read_documents(inputs, key, text, blocksize=block_bytes(inputs, workers))
        summary: dict[str, Any] = {"workers": workers}
        matched: set[Any] = set()
        if against is not None:
            m = match_index(frame, against, text=text, key=key,
                            threshold=options.get("threshold", 0.8),
                            verify=options.get("verify", "exact"))
            parts = m.to_delayed()
            extra = [dask.delayed(lambda f: set(f["a"].tolist()))(x) for x in parts] \
                if add_to else []
            values, (n,) = write_results([(pairs, parts)], *extra)
            matched = set().union(*values) if values else set()
            summary.update(against=against, pairs_written=n, documents_matched=len(matched))
        if against is None or add_to is not None:
            result = dedup(frame, text=text, key=key, **options)
            targets = [] if against is not None else [(pairs, result.pair_parts),
                                                      (clusters, result.cluster_parts)]
            (stats, roots), counts = write_results(targets, result.stats, result.roots)
            summary.update(stats)
            if against is None:
                summary.update(pairs_written=counts[0], clusters_written=counts[1])
        if add_to is not None:
            nodes, root = roots
            added = 0
            with open_index(add_to) as ix, ix.writer() as w:
                for p, part in enumerate(frame[[key, text]].to_delayed()):
                    ks, ts = dask.delayed(_survivors)(part, p, key, text, nodes, root,
                                                      matched).compute()
                    if ks:
                        w.add(ks, ts)
                        added += len(ks)
            summary.update(added_to=add_to, documents_added=added)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
