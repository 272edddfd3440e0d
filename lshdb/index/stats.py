"""What ``Index.stats()`` reports about one snapshot: parameters, counts, bucket sizes and
bytes on disk by part."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics.sets import describe_sets
from ..storage import postings
from ..storage.codec import unpack_meta
from ..storage.store import table_name

if TYPE_CHECKING:
    from .reader import Reader

__all__ = ["snapshot_stats"]


def _calibration(r: Reader) -> dict[str, Any] | None:
    """What the calibration chose and predicted (None: not calibrated)."""
    raw = r.txn.get(b"calibration", db=r.store.db(b"meta"))
    return unpack_meta(raw, "calibration") if raw is not None else None

def snapshot_stats(r: Reader, buckets: bool = True) -> dict[str, Any]:
    """Parameters, counts, bucket-size distribution per table and bytes on disk by part,
    as of the snapshot ``r``."""
    store, txn = r.store, r.txn
    fam = r.family
    out: dict[str, Any] = {
        "path": r.index.path,
        "generation": r.index.generation,
        "metric": r.metric.name,
        **describe_sets(r.metric),  # dim, or what a jaccard index's items are
        "family": fam.describe() if fam else None,
        "settings": dict(r.settings),
        "calibration": _calibration(r),
        "durability": r.index.durability,
        "rows": r.n_rows,
        "live": r.live,
        "deleted": r.n_rows - r.live,
        # small batches waiting to be merged into the tables (lshdb.storage.runs); the bucket
        # statistics below count the tables only
        "runs": int(r.state.get("runs", 0)),
    }
    sizes: dict[str, int] = {}
    tables: list[dict[str, Any]] = []
    for name in [b"meta", b"key2id", b"id2key"] + [
            table_name(t) for t in range(fam.L if fam else 0)]:
        st = txn.stat(store.db(name))
        sizes[name.decode()] = st["psize"] * (st["branch_pages"] + st["leaf_pages"]
                                              + st["overflow_pages"])
    n_tables = fam.L if fam else 0
    histogram = np.zeros(33, dtype=np.int64)
    if buckets and fam is not None:
        for t in range(n_tables):
            row, bucket_sizes = _bucket_stats(txn, store.db(table_name(t)))
            tables.append(row)
            if len(bucket_sizes):
                histogram += np.bincount(np.log2(bucket_sizes).astype(np.int64),
                                         minlength=33)[:33]
    posting_bytes = sum(v for k, v in sizes.items() if k.startswith("t"))
    out["bytes"] = {
        "rows": r.rows.size_bytes(),
        "postings": posting_bytes,
        "key_maps": sizes["key2id"] + sizes["id2key"],
        "meta": sizes["meta"],
        "lmdb_file": int(store.env.info()["last_pgno"] + 1) * txn.stat(store.db(b"meta"))["psize"],
    }
    if r.live:
        out["bytes_per_vector_per_table"] = (
            (posting_bytes + out["bytes"]["key_maps"]) / r.live / max(n_tables, 1))
    if tables:
        out["tables"] = tables
        # values a probe reads per bucket: 1 after a bulk load or a compaction, towards 2
        # as appends give buckets a tail chunk (docs/guarantees.md, "Small writes")
        n_buckets = sum(t["buckets"] for t in tables)
        out["chunks_per_bucket"] = sum(t["chunks"] for t in tables) / max(n_buckets, 1)
        top = int(np.flatnonzero(histogram).max()) + 1 if histogram.any() else 0
        out["bucket_histogram"] = [{"ids": f"{2**b}-{2 ** (b + 1) - 1}",
                                    "buckets": int(histogram[b])} for b in range(top)]
    return out


def _bucket_stats(txn: Any, db: Any) -> tuple[dict[str, Any], np.ndarray]:
    sizes: list[int] = []
    chunks = 0
    last = b""
    for bucket, _, ids in postings.iter_table(txn, db):
        chunks += 1
        if bucket == last:
            sizes[-1] += len(ids)
        else:
            sizes.append(len(ids))
            last = bucket
    a = np.asarray(sizes) if sizes else np.zeros(1, dtype=np.int64)
    q = np.percentile(a, [50, 90, 99]) if sizes else [0, 0, 0]
    return ({"buckets": len(sizes), "chunks": chunks, "ids": int(a.sum()),
             "mean": float(a.mean()), "p50": float(q[0]), "p90": float(q[1]),
             "p99": float(q[2]), "max": int(a.max())}, np.asarray(sizes))
