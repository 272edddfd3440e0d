"""Recent runs: small appends kept as sorted arrays until enough of them are merged.

A small batch goes into one *run* (a value in ``meta``) instead of the tables, so that the
tables' B-tree pages are rewritten once per :data:`RUN_MAX` + 1 small batches instead of
once per batch. Each reader process decodes a run once and merges it into the sorted set
of its snapshot's runs (:class:`RunCache`, :class:`RunSet`), which a query searches once
whatever the number of runs (:meth:`RunSet.lookup`). The value layout and the derived sort
key are described in docs/format.md ("Runs"); the behaviour in docs/guarantees.md.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Any

import numpy as np

from ..bits import mix64
from ..errors import CorruptIndexError
from .codec import ID_DTYPE

__all__ = ["RUN_MAX", "DIRECT_PAIRS", "PREFIX", "Run", "RunSet", "RunCache", "run_key",
           "encode_run", "decode_run", "list_runs", "derived_keys"]

RUN_MAX = 4  # runs waiting at most; the next small batch merges them all
DIRECT_PAIRS = 1 << 16  # (table, bucket, id) triples from which a batch skips the runs
PREFIX = b"run-"
_MAGIC = b"LSHRUN1\0"
_HEAD = struct.Struct("<8sII")
_SALT_BASE = np.uint64(0x6A09E667F3BCC909)


def run_key(seq: int) -> bytes:
    return PREFIX + b"%016x" % seq


_SALTS = mix64(np.arange(1 << 12, dtype=np.uint64) + _SALT_BASE)  # tables below 4,096


_ODD = np.uint64(0x9E3779B97F4A7C15)


def derived_keys(tables: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """The 60-bit sort key of (table, bucket) pairs: the top 60 bits of
    ``(bucket ^ salt(table)) * 0x9E3779B97F4A7C15`` (mod 2**64), which spreads small bucket
    numbers over the key range (tables from 4,095 on share a salt). Equal keys need not
    mean equal pairs: look-ups compare the table and the bucket of what they find."""
    k = np.bitwise_xor(buckets, _SALTS.take(tables, mode="clip"), dtype=np.uint64)
    k *= _ODD
    k >>= np.uint64(4)
    return k


class Run:
    """One decoded run: parallel arrays sorted by derived key."""

    __slots__ = ("keys", "buckets", "ids", "tables")

    def __init__(self, buckets: np.ndarray, ids: np.ndarray, tables: np.ndarray) -> None:
        self.buckets, self.ids, self.tables = buckets, ids, tables
        self.keys = derived_keys(tables, buckets)

    def __len__(self) -> int:
        return len(self.ids)

    def table(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The (buckets, ids) of table ``t`` in this run."""
        sel = self.tables == t
        return self.buckets[sel], self.ids[sel]


class RunSet:
    """The entries of a snapshot's runs merged into one sequence sorted by derived key, so a
    query searches it once whatever the number of runs: two binary searches per probe
    (cheaper than a two-level search; docs/performance.md). A set is immutable;
    :meth:`extended` merges one more run into a new set (linear in the set's size, once per
    run and process).
    """

    __slots__ = ("names", "n", "_keys", "_ids", "_tables", "_buckets")

    def __init__(self, names: list[bytes] | None = None,
                 arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
                 ) -> None:
        self.names: list[bytes] = names or []
        keys, ids, tables, buckets = arrays or (
            np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint16),
            np.empty(0, np.uint64))
        self.n = len(keys)
        self._keys, self._ids, self._tables, self._buckets = keys, ids, tables, buckets

    def extended(self, name: bytes, run: Run) -> RunSet:
        """A new set: this one's entries and ``run``'s, merged."""
        keys = self._keys[: self.n]
        at = keys.searchsorted(run.keys, "right")  # both sorted: a linear merge
        at += np.arange(len(run))
        total = self.n + len(run)
        old = np.ones(total, dtype=bool)
        old[at] = False
        arrays = []
        for mine, theirs in ((keys, run.keys), (self._ids, run.ids),
                             (self._tables, run.tables), (self._buckets, run.buckets)):
            out = np.empty(total, dtype=mine.dtype)
            out[at] = theirs
            out[old] = mine
            arrays.append(out)
        return RunSet(self.names + [name], (arrays[0], arrays[1], arrays[2], arrays[3]))

    def lookup(self, tables: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """The ids the runs hold for the probes ``(tables[j], buckets[j])``."""
        if not self.n or not len(tables):
            return _NONE
        tables = np.asarray(tables, dtype=np.int64)
        buckets = np.asarray(buckets, dtype=np.uint64)
        needles = derived_keys(tables, buckets)
        lo = self._keys.searchsorted(needles, "left")
        n = self._keys.searchsorted(needles, "right")
        n -= lo  # entries per needle: its bucket's ids (and any pair sharing its key)
        hit = np.flatnonzero(n)
        if not len(hit):
            return _NONE
        n, lo = n[hit], lo[hit]
        total = int(n.sum())
        if total == len(hit):  # one entry per matched needle (the usual case)
            pos, probe = lo, hit
        else:  # positions lo[j] .. lo[j] + n[j] - 1 of every needle j that matched
            pos = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(total)
            probe = np.repeat(hit, n)
        ok = (self._tables[pos] == tables[probe]) & (self._buckets[pos] == buckets[probe])
        return self._ids[pos[ok]]


_NONE = np.empty(0, dtype=np.uint32)
_NONE.flags.writeable = False


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
    tables = np.frombuffer(body, dtype="<u2", count=n, offset=12 * n).astype(np.uint16)
    run = Run(buckets, ids, tables)
    if n > 1 and (run.keys[1:] < run.keys[:-1]).any():
        raise CorruptIndexError(f"{where} is not in key order; run `lshdb check`")
    return run


def list_runs(txn: Any, meta: Any) -> list[tuple[bytes, Run]]:
    """The runs of the snapshot ``txn`` by name, in sequence order, decoded afresh."""
    out = []
    for name in _names(txn, meta):
        out.append((name, _load(txn, meta, name)))
    return out


def _names(txn: Any, meta: Any) -> list[bytes]:
    names: list[bytes] = []
    c = txn.cursor(meta)
    if c.set_range(PREFIX):
        for k in c.iternext(values=False):
            if not k.startswith(PREFIX):
                break
            names.append(bytes(k))
    return names


def _load(txn: Any, meta: Any, name: bytes) -> Run:
    raw = txn.get(name, db=meta)
    if raw is None:
        raise CorruptIndexError(f"run {name.decode()} vanished from its snapshot")
    return decode_run(raw, f"run {name.decode()}")


class RunCache:
    """One process's merged runs of one generation (run names are never reused in one): the
    :class:`RunSet` of the latest few snapshots, by their run names. Only committed runs
    may enter: readers use it, a writer decodes its own runs afresh. Memory: at most
    4 sets of at most 4 runs of fewer than 65,536 entries of 22 bytes, under 24 MB."""

    _KEEP = 4  # sets kept: snapshots a few commits old still find theirs

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[tuple[bytes, ...], RunSet] = {}

    def snapshot(self, txn: Any, meta: Any) -> RunSet:
        names = tuple(_names(txn, meta))
        with self._lock:
            found = self._sets.get(names)
            if found is not None:
                return found
            # the longest kept set whose runs begin this snapshot's (usually the last one)
            base = max((s for k, s in self._sets.items() if names[: len(k)] == k),
                       key=lambda s: len(s.names), default=RunSet())
        for name in names[len(base.names):]:  # outside the lock: decode and merge
            base = base.extended(name, _load(txn, meta, name))
        with self._lock:
            self._sets[names] = base
            while len(self._sets) > self._KEEP:
                del self._sets[next(iter(self._sets))]  # the oldest
        return base
