"""Sharded indexes: S ordinary indexes under one folder, read as one.

On disk::

    NAME.lshdb/
      shards.json          the manifest: format, metric, dim, routing, the shard folders
      shard-0000.lshdb/    an ordinary lshdb index (its own LMDB, rows, CURRENT)
      ...

:func:`lshdb.dask.shards.build_sharded` writes one (every shard with the same calibrated
family). A key lives in shard ``route(key)`` (an int by splitmix64, any other key by BLAKE2b
of its msgpack bytes; modulo S), the same on every machine.

:class:`ShardedIndex` (what :func:`lshdb.open` returns for such a folder) has the read API of
an :class:`~lshdb.index.index.Index`: ``query`` and ``query_batch`` ask every shard for its
top k and merge them; ``get``, ``in`` and writes go to the key's shard; ``len`` and
``stats`` sum over the shards. It needs no Dask; ``query_batch(..., client=...)`` runs each
shard's part on a Dask worker.

Thread safety: as an Index; a ShardedIndex holds one open Index per shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..bits import mix64
from ..errors import CorruptIndexError, NotAnIndexError
from ..storage.codec import Key, pack_keys
from .index import Index
from .index import check as check_index
from .index import open as open_index

__all__ = ["MANIFEST", "FORMAT", "VERSION", "ShardedIndex", "is_sharded", "open_sharded",
           "route", "read_manifest", "check_sharded"]

MANIFEST = "shards.json"
FORMAT = "lshdb-shards"
VERSION = 1


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sharded index folder (it holds a manifest)."""
    return os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


def route(keys: Iterable[Key], n_shards: int) -> np.ndarray:
    """The shard of each key, the same on every machine: an int key by splitmix64 of its
    64-bit two's complement (vectorised: row numbers route in milliseconds), any other key
    by BLAKE2b-64 of its msgpack bytes; modulo ``n_shards``."""
    keys = keys if isinstance(keys, (list, range, np.ndarray)) else list(keys)
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        ints: np.ndarray | None = keys.astype(np.int64, copy=False).view(np.uint64) \
            if keys.dtype.kind == "i" else keys.astype(np.uint64, copy=False)
    else:
        ints = _as_ints(keys)
    if ints is not None:
        return (mix64(ints) % np.uint64(n_shards)).astype(np.int64)
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        ki = _as_ints([k])
        if ki is not None:
            out[i] = int(mix64(ki)[0] % np.uint64(n_shards))
        else:
            _, packed = pack_keys([k])
            out[i] = int.from_bytes(hashlib.blake2b(packed[0], digest_size=8).digest(),
                                    "big") % n_shards
    return out


def _as_ints(keys: Any) -> np.ndarray | None:
    """The keys as uint64 (two's complement) if every one is an int (not a bool), else None."""
    if isinstance(keys, range):
        return np.arange(keys.start, keys.stop, keys.step, dtype=np.int64).view(np.uint64)
    if not all(type(k) is int for k in keys):
        return None
    try:
        return np.fromiter(keys, dtype=np.int64, count=len(keys)).view(np.uint64)
    except OverflowError:  # keys past 2**63 - 1 (up to 2**64 - 1 are valid keys)
        return np.array([k & 0xFFFFFFFFFFFFFFFF for k in keys], dtype=np.uint64)


def read_manifest(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        raise NotAnIndexError(f"{path} is not a sharded lshdb index (no {MANIFEST})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{path}/{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not m.get("shards"):
        raise CorruptIndexError(f"{path}/{MANIFEST} is not an lshdb shard manifest")
    if m.get("version") != VERSION:
        raise CorruptIndexError(f"{path}/{MANIFEST} has version {m.get('version')!r}; this "
                                f"lshdb reads version {VERSION}")
    return m


class ShardedIndex:
    """S shard indexes queried as one; see the module docstring. Use :func:`lshdb.open`."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        self.shard_paths = [os.path.join(path, s) for s in self.manifest["shards"]]
        self.shards: list[Index] = []
        try:
            for p in self.shard_paths:
                self.shards.append(open_index(p, readonly=readonly))
        except BaseException:
            self.close()
            raise
        first = self.shards[0]
        self.metric, self.family, self.options = first.metric, first.family, first.options
        self.settings = first.settings

    # -- life cycle
    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedIndex({self.path!r}, shards={len(self.shards)})"

    # -- reads
    @contextlib.contextmanager
    def reader(self) -> Iterator[_ShardedReader]:
        """One snapshot per shard (each consistent; the shards are not one transaction)."""
        with contextlib.ExitStack() as stack:
            yield _ShardedReader(self, [stack.enter_context(s.reader()) for s in self.shards])

    def query(self, vector: Any, k: int | None = 10, **kw: Any) -> list[tuple[Key, float]]:
        with self.reader() as r:
            return r.query(vector, k, **kw)

    def query_batch(self, vectors: Any, k: int | None = 10, client: Any = None,
                    **kw: Any) -> list[list[tuple[Key, float]]]:
        """:meth:`query` for many; with a Dask ``client``, each shard's part runs on a
        worker (which opens the shard from the path in the manifest: the shard must be on
        that worker's disk)."""
        if client is None:
            with self.reader() as r:
                return r.query_batch(vectors, k, **kw)
        futures = [client.submit(_query_shard, p, vectors, k, kw, pure=False)
                   for p in self.shard_paths]
        return _merge_batch(client.gather(futures), k, self.larger_is_better())

    def get(self, key: Key) -> np.ndarray:
        return self._shard_of(key).get(key)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._shard_of(key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def keys(self) -> list[Key]:
        return [k for s in self.shards for k in s.keys()]

    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """Shard 0's stats with the counts and bytes summed over the shards, and a line per
        shard under ``shards``."""
        each = [s.stats(buckets=buckets) for s in self.shards]
        out = dict(each[0])
        out["path"] = self.path
        for name in ("rows", "live", "deleted"):
            out[name] = sum(int(e.get(name) or 0) for e in each)
        out["bytes"] = {part: sum(int(e["bytes"].get(part, 0)) for e in each)
                        for part in each[0].get("bytes", {})}
        out.pop("tables", None)
        out.pop("bucket_histogram", None)
        out["shards"] = [{"path": p, "live": e.get("live"), "rows": e.get("rows")}
                         for p, e in zip(self.manifest["shards"], each)]
        return out

    # -- writes, routed by key
    def _shard_of(self, key: Key) -> Index:
        return self.shards[int(route([key], len(self.shards))[0])]

    def _routed(self, keys: Iterable[Key]) -> tuple[list[Key], np.ndarray]:
        keys = list(keys)
        return keys, route(keys, len(self.shards))

    def add(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add to each key's shard (one transaction per shard: a failure can leave the
        shards before it written)."""
        self._write("add", keys, vectors)

    def upsert(self, keys: Iterable[Key], vectors: Any) -> None:
        self._write("upsert", keys, vectors)

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        keys, dest = self._routed(keys)
        return sum(self.shards[s].delete([keys[i] for i in np.flatnonzero(dest == s).tolist()],
                                         missing_ok=missing_ok)
                   for s in np.unique(dest).tolist())

    def _write(self, op: str, keys: Iterable[Key], vectors: Any) -> None:
        keys, dest = self._routed(keys)
        items = vectors if isinstance(vectors, list) else np.asarray(vectors)
        for s in np.unique(dest).tolist():
            rows = np.flatnonzero(dest == s)
            part = [items[i] for i in rows.tolist()] if isinstance(items, list) else items[rows]
            getattr(self.shards[s], op)([keys[i] for i in rows.tolist()], part)

    def larger_is_better(self) -> bool:
        return self.metric.is_set


class _ShardedReader:
    """Readers of every shard, queried together."""

    def __init__(self, index: ShardedIndex, readers: list[Any]) -> None:
        self._index, self._readers = index, readers

    def query(self, vector: Any, k: int | None = 10, **kw: Any) -> list[tuple[Key, float]]:
        hits = [h for r in self._readers for h in r.query(vector, k, **kw)]
        return _top(hits, k, self._index.larger_is_better())

    def query_batch(self, vectors: Any, k: int | None = 10, **kw: Any
                    ) -> list[list[tuple[Key, float]]]:
        return _merge_batch([r.query_batch(vectors, k, **kw) for r in self._readers], k,
                            self._index.larger_is_better())

    def get(self, key: Key) -> np.ndarray:
        return self._index.get(key)

    def __len__(self) -> int:
        return sum(len(r) for r in self._readers)

    def __contains__(self, key: object) -> bool:
        return key in self._index


def _top(hits: list[tuple[Key, float]], k: int | None, larger: bool) -> list[tuple[Key, float]]:
    hits.sort(key=lambda h: -h[1] if larger else h[1])
    return hits if k is None else hits[:k]


def _merge_batch(per_shard: list[list[list[tuple[Key, float]]]], k: int | None,
                 larger: bool) -> list[list[tuple[Key, float]]]:
    return [_top([h for shard in per_shard for h in shard[i]], k, larger)
            for i in range(len(per_shard[0]) if per_shard else 0)]


def _query_shard(path: str, vectors: Any, k: int | None, kw: dict[str, Any]
                 ) -> list[list[tuple[Key, float]]]:
    with open_index(path, readonly=True) as ix, ix.reader() as r:
        return r.query_batch(vectors, k, **kw)


def open_sharded(path: str | os.PathLike[str], readonly: bool = False) -> ShardedIndex:
    """Open a sharded index folder (see :func:`lshdb.open`)."""
    return ShardedIndex(os.fspath(path), readonly=readonly)


def check_sharded(path: str, fix: bool = False, progress: Any = None,
                  isolate: bool = False, drop_damaged: bool = False) -> dict[str, Any]:
    """:func:`lshdb.check` of every shard, and the manifest against the folder."""
    m = read_manifest(path)
    report: dict[str, Any] = {"ok": True, "problems": [], "fixed": [], "shards": []}
    for name in m["shards"]:
        sub = os.path.join(path, name)
        if not os.path.isdir(sub):
            report["problems"].append(f"{name}: the manifest names it but it is missing")
            continue
        r = check_index(sub, fix=fix, progress=progress, isolate=isolate, drop_damaged=drop_damaged)
        report["problems"] += [f"{name}: {p}" for p in r["problems"]]
        report["fixed"] += [f"{name}: {p}" for p in r["fixed"]]
        report["shards"].append({"shard": name, "ok": r["ok"]})
    report["ok"] = not report["problems"]
    return report
