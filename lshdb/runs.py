"""Recent runs: small appends kept as sorted arrays until enough of them are merged.

An append into a B-tree of posting lists rewrites every leaf page that holds a touched
bucket, and a batch of 1,000 vectors touches about 1,000 buckets in each table: most of the
tables' pages, however few ids are added. A small batch therefore goes into one *run*
instead: one value holding the batch's ``(table, bucket, id)`` triples for every table,
sorted by a key derived from (table, bucket). Up to :data:`RUN_MAX` runs wait in the
``meta`` database under ``run-<sequence number, 16 hex digits>``; the write that would add
one more merges them all into the tables in one append, so each leaf page is rewritten once
per :data:`RUN_MAX` small batches instead of once per batch. Batches of
:data:`DIRECT_PAIRS` triples or more go to the tables directly. A delete replaces each run
holding deleted ids by a new run without them. Runs live inside the same write transaction
as everything else: a crash leaves either the run or nothing.

Readers look a query's buckets up in each run (:meth:`Run.find`). A run's value never
changes and its name is never reused in a generation (the state record keeps the next
sequence number), so each process decodes a run once and keeps it (:func:`list_runs`).

Value layout (little-endian)::

    b"LSHRUN1\\0"  n (uint32)  crc32 of the rest (uint32)
    buckets (uint64 x n)  ids (uint32 x n)  tables (uint16 x n)

ordered by ``(mix64(bucket ^ salt(table)), table, id)``; ``mix64`` is a bijection, so for
one table equal derived keys mean equal buckets.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Any

import numpy as np

from .codec import ID_DTYPE
from .errors import CorruptIndexError
from .families import mix64

__all__ = ["RUN_MAX", "DIRECT_PAIRS", "PREFIX", "Run", "run_key", "encode_run", "decode_run",
           "list_runs", "snapshot_runs", "lookup", "derived_keys"]

RUN_MAX = 8  # runs waiting at most; the next small batch merges them all
DIRECT_PAIRS = 1 << 16  # (table, bucket, id) triples from which a batch skips the runs
PREFIX = b"run-"
_MAGIC = b"LSHRUN1\0"
_HEAD = struct.Struct("<8sII")
_SALT_BASE = np.uint64(0x6A09E667F3BCC909)


def run_key(seq: int) -> bytes:
    return PREFIX + b"%016x" % seq


_SALTS = mix64(np.arange(1 << 12, dtype=np.uint64) + _SALT_BASE)  # tables below 4,096


def derived_keys(tables: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """The sort key of (table, bucket) pairs: ``mix64(bucket ^ salt(table))``."""
    tables = np.asarray(tables, dtype=np.intp)
    salts = _SALTS[tables] if len(tables) == 0 or tables.max() < len(_SALTS) else \
        mix64(tables.astype(np.uint64) + _SALT_BASE, copy=False)
    return mix64(np.bitwise_xor(buckets, salts, dtype=np.uint64), copy=False)


_BLOCK = 16  # keys per block of the two-level search (two cache lines)
_TOP = np.uint64(0xFFFFFFFFFFFFFFFF)


class Run:
    """One decoded run: parallel arrays sorted by derived key, and the keys again as
    blocks of :data:`_BLOCK` with the first key of each (the fence) for :meth:`find`."""

    __slots__ = ("keys", "buckets", "ids", "tables", "blocks", "fence")

    def __init__(self, buckets: np.ndarray, ids: np.ndarray, tables: np.ndarray) -> None:
        self.buckets, self.ids, self.tables = buckets, ids, tables
        self.keys = derived_keys(tables, buckets)
        padded = np.full(-(-len(ids) // _BLOCK) * _BLOCK, _TOP, dtype=np.uint64)
        padded[: len(ids)] = self.keys
        self.blocks = padded.reshape(-1, _BLOCK)
        self.fence = np.ascontiguousarray(self.blocks[:, 0])

    def __len__(self) -> int:
        return len(self.ids)

    def table(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The (buckets, ids) of table ``t`` in this run."""
        sel = self.tables == t
        return self.buckets[sel], self.ids[sel]

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the entries whose derived key is one of ``keys``, and for each the
        index of its probe key. Two levels: a binary search of a whole run misses the cache
        at nearly every step, the fence (a sixteenth of the keys) stays in it. Each probe
        reads one block: the one where its key would end, which holds the key if the run
        has it."""
        none = np.empty(0, dtype=np.intp)
        if not len(self.ids):
            return none, none
        b = self.fence.searchsorted(keys, "right")
        b -= 1
        np.maximum(b, 0, out=b)  # the last block whose first key is <= the probe
        hit = (self.blocks[b] == keys[:, None]).any(axis=1).nonzero()[0]
        if not len(hit):
            return none, none
        want = keys[hit]
        lo = self.keys.searchsorted(want, "left")
        n = self.keys.searchsorted(want, "right")
        n -= lo
        total = int(n.sum())
        if total == len(hit):  # one entry per matched probe (the usual case)
            return lo, hit
        # positions lo[j] .. lo[j] + n[j] - 1 of every probe j that matched
        pos = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(total)
        return pos, np.repeat(hit, n)


def encode_run(tables: np.ndarray, buckets: np.ndarray, ids: np.ndarray) -> bytes:
    """A run value from parallel arrays (any order)."""
    tables = np.asarray(tables, dtype="<u2")
    buckets = np.asarray(buckets, dtype="<u8")
    ids = np.asarray(ids, dtype=ID_DTYPE)
    order = np.lexsort((ids, tables, derived_keys(tables, buckets)))
    body = b"".join((buckets[order].tobytes(), ids[order].tobytes(), tables[order].tobytes()))
    return _HEAD.pack(_MAGIC, len(order), zlib.crc32(body)) + body


def decode_run(value: bytes, where: str = "a run") -> Run:
    """Parse and verify a run value; :class:`CorruptIndexError` if it is damaged."""
    if len(value) < _HEAD.size:
        raise CorruptIndexError(f"{where} is truncated; run `lshdb check`")
    magic, n, crc = _HEAD.unpack_from(value)
    body = memoryview(value)[_HEAD.size :]
    if magic != _MAGIC or len(body) != 14 * n or zlib.crc32(body) != crc:
        raise CorruptIndexError(f"{where} is damaged (bad header, length or checksum); "
                                "run `lshdb check` and restore the index from a backup")
    buckets = np.frombuffer(body, dtype="<u8", count=n).astype(np.uint64)
    ids = np.frombuffer(body, dtype=ID_DTYPE, count=n, offset=8 * n).astype(np.uint32)
    tables = np.frombuffer(body, dtype="<u2", count=n, offset=12 * n).astype(np.int64)
    run = Run(buckets, ids, tables)
    if n > 1 and (run.keys[1:] < run.keys[:-1]).any():
        raise CorruptIndexError(f"{where} is not in key order; run `lshdb check`")
    return run


_cache_lock = threading.Lock()


def list_runs(txn: Any, meta: Any, cache: dict[bytes, Run] | None = None
              ) -> list[tuple[bytes, Run]]:
    """The runs of the snapshot ``txn`` by name, in sequence order, decoded once per
    process through ``cache`` (one per generation: run names are never reused in one).
    Without a cache each is decoded afresh (a writer's own runs may not be committed)."""
    names: list[bytes] = []
    c = txn.cursor(meta)
    if c.set_range(PREFIX):
        for k in c.iternext(values=False):
            if not k.startswith(PREFIX):
                break
            names.append(bytes(k))
    out = []
    for name in names:
        run = cache.get(name) if cache is not None else None
        if run is None:
            raw = txn.get(name, db=meta)
            if raw is None:
                raise CorruptIndexError(f"run {name.decode()} vanished from its snapshot")
            run = decode_run(raw, f"run {name.decode()}")
            if cache is not None:
                with _cache_lock:
                    if len(cache) > 4 * RUN_MAX:  # drop runs merged away since
                        for old in [k for k in cache if k not in names]:
                            del cache[old]
                    cache[name] = run
        out.append((name, run))
    return out


def snapshot_runs(txn: Any, meta: Any, cache: dict[bytes, Run] | None = None) -> list[Run]:
    """:func:`list_runs` without the names."""
    return [run for _, run in list_runs(txn, meta, cache)]


def lookup(runs: list[Run], tables: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """The ids that the runs hold for the probes ``(tables[j], buckets[j])``."""
    if not runs:
        return np.empty(0, dtype=np.uint32)
    tables = np.asarray(tables, dtype=np.int64)
    keys = derived_keys(tables, np.asarray(buckets, dtype=np.uint64))
    found = []
    for run in runs:
        pos, probe = run.find(keys)
        if len(pos):
            # equal derived keys and tables mean equal buckets (mix64 is a bijection); an
            # entry of another table with the same derived key (odds 2**-64) is dropped
            found.append(run.ids[pos[run.tables[pos] == tables[probe]]])
    return np.concatenate(found) if found else np.empty(0, dtype=np.uint32)
