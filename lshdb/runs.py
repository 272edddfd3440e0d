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

Readers look a query's buckets up in all runs at once (:meth:`RunSet.lookup`). A run's value never
changes and its name is never reused in a generation (the state record keeps the next
sequence number), so each process decodes a run once and keeps it (:class:`RunCache`).

Value layout (little-endian)::

    b"LSHRUN1\\0"  n (uint32)  crc32 of the rest (uint32)
    buckets (uint64 x n)  ids (uint32 x n)  tables (uint16 x n)

ordered by ``(derived key, table, id)`` (:func:`derived_keys`: 60 bits from the table and
the bucket).
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

__all__ = ["RUN_MAX", "DIRECT_PAIRS", "PREFIX", "Run", "RunSet", "RunCache", "run_key",
           "encode_run", "decode_run", "list_runs", "snapshot_runs", "derived_keys"]

RUN_MAX = 4  # runs waiting at most; the next small batch merges them all (at most 16)
DIRECT_PAIRS = 1 << 16  # (table, bucket, id) triples from which a batch skips the runs
PREFIX = b"run-"
_MAGIC = b"LSHRUN1\0"
_HEAD = struct.Struct("<8sII")
_SALT_BASE = np.uint64(0x6A09E667F3BCC909)


def run_key(seq: int) -> bytes:
    return PREFIX + b"%016x" % seq


_SALTS = mix64(np.arange(1 << 12, dtype=np.uint64) + _SALT_BASE)  # tables below 4,096
_KEY_BITS = np.uint64(60)  # derived keys; a run's place in a RunSet takes the top 4 bits
_BLOCK = 16  # keys per block of the two-level search (two cache lines; _counts needs 16)
_LOW = np.uint64((1 << 60) - 1)


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


def _counts(mask: np.ndarray) -> np.ndarray:
    """True values per row of a (rows, 16) bool array: its bytes as two 64-bit words, whose
    set bits are the True values (a numpy reduction along short rows costs far more)."""
    words = mask.view(np.uint64)
    return np.bitwise_count(words[:, 0]).astype(np.intp) + np.bitwise_count(words[:, 1])


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
    """The runs of a snapshot as one sorted sequence, searched in one pass for all runs.

    Run ``r`` (its place in the snapshot) puts ``r`` in the top 4 bits of its keys and is
    padded to whole blocks of :data:`_BLOCK` keys, so the runs' keys laid end to end are
    sorted. A two-level search finds a probe: a binary search of the whole sequence would
    miss the cache at nearly every step; the fence (the first key of each block) stays in
    it, and each probe then reads one block. The arrays have spare capacity, so the next
    snapshot (the same runs and a new one) appends the new run in place: an older set's
    views end before it.
    """

    __slots__ = ("names", "ends", "n", "_keys", "_ids", "_tables", "_buckets", "_fence")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.ends: list[int] = []
        self.n = 0
        self._keys = np.empty(0, dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.uint32)
        self._tables = np.empty(0, dtype=np.int64)
        self._buckets = np.empty(0, dtype=np.uint64)
        self._fence = np.empty(0, dtype=np.uint64)

    def _view(self, names: list[bytes], ends: list[int]) -> RunSet:
        out = RunSet()
        out.names, out.ends, out.n = names, ends, ends[-1] if ends else 0
        out._keys, out._ids, out._tables = self._keys, self._ids, self._tables
        out._buckets, out._fence = self._buckets, self._fence
        return out

    def prefix(self, k: int) -> RunSet:
        """The set of this set's first ``k`` runs (sharing its arrays)."""
        return self._view(self.names[:k], self.ends[:k])

    def extended(self, name: bytes, run: Run) -> RunSet:
        """This set and one more run, appended in place after ``self.n`` when the arrays
        have room (callers serialise this: :class:`RunCache`)."""
        r = len(self.names)
        if r >= 16:
            raise CorruptIndexError(f"a snapshot holds more than 16 runs ({name.decode()})")
        m = -(-len(run) // _BLOCK) * _BLOCK
        end = self.n + m
        if end > len(self._keys):
            cap = max(end, 2 * len(self._keys), 1024)
            grown = self._view(self.names, self.ends)
            for attr in ("_keys", "_ids", "_tables", "_buckets"):
                old = getattr(self, attr)
                new = np.empty(cap, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(grown, attr, new)
            fence = np.empty(cap // _BLOCK, dtype=np.uint64)
            fence[: self.n // _BLOCK] = self._fence[: self.n // _BLOCK]
            grown._fence = fence
            return grown.extended(name, run)
        top = _TOPS[r]
        a, z = self.n, self.n + len(run)
        np.bitwise_or(run.keys, top, out=self._keys[a:z])
        self._keys[z:end] = top | _LOW  # padding: above the run's keys, below the next run's
        self._ids[a:z], self._ids[z:end] = run.ids, 0
        self._tables[a:z], self._tables[z:end] = run.tables, -1  # matches no probe
        self._buckets[a:z], self._buckets[z:end] = run.buckets, 0
        self._fence[a // _BLOCK : end // _BLOCK] = self._keys[a:end:_BLOCK]
        return self._view(self.names + [name], self.ends + [end])

    def lookup(self, tables: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """The ids the runs hold for the probes ``(tables[j], buckets[j])``."""
        if not self.n or not len(tables):
            return _NONE
        tables = np.asarray(tables, dtype=np.int64)
        buckets = np.asarray(buckets, dtype=np.uint64)
        needles = derived_keys(tables, buckets)
        if len(self.names) > 1:  # each probe once per run, the run's number on top
            needles = (_TOPS[: len(self.names), None] | needles[None, :]).ravel()
        keys = self._keys[: self.n]
        b = self._fence[: self.n // _BLOCK].searchsorted(needles, "right")
        b -= 1
        np.maximum(b, 0, out=b)  # the last block whose first key is <= the needle
        col = needles[:, None]
        blk = keys.reshape(-1, _BLOCK)[b]
        eq = blk == col
        words = eq.view(np.uint64)  # (needles, 2): nonzero where the block holds the needle
        hit = np.bitwise_or(words[:, 0], words[:, 1]).nonzero()[0]
        if not len(hit):
            return _NONE
        # equal keys are adjacent and a range ends in block b (the next block starts
        # above the needle); it starts there too unless b's first key is the needle
        eq, blk, col, b = eq[hit], blk[hit], col[hit], b[hit]
        n = _counts(eq)
        lo = b * _BLOCK + _counts(blk < col)
        first = words[hit, 0] & np.uint64(1)  # the block's first key is the needle
        if first.any():
            spill = np.flatnonzero(first.astype(bool) & (b > 0))
            if len(spill):  # a range from an earlier block: search the whole sequence
                end = lo[spill] + n[spill]
                lo[spill] = keys.searchsorted(needles[hit[spill]], "left")
                n[spill] = end - lo[spill]
        total = int(n.sum())
        if total == len(hit):  # one entry per matched needle (the usual case)
            pos, probe = lo, hit
        else:  # positions lo[j] .. lo[j] + n[j] - 1 of every needle j that matched
            pos = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(total)
            probe = np.repeat(hit, n)
        if len(self.names) > 1:
            probe %= len(tables)
        ok = (self._tables[pos] == tables[probe]) & (self._buckets[pos] == buckets[probe])
        return self._ids[pos[ok]]


_NONE = np.empty(0, dtype=np.uint32)
_NONE.flags.writeable = False
_TOPS = np.arange(16, dtype=np.uint64) << _KEY_BITS


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


def list_runs(txn: Any, meta: Any) -> list[tuple[bytes, Run]]:
    """The runs of the snapshot ``txn`` by name, in sequence order, decoded afresh."""
    out = []
    for name in _names(txn, meta):
        out.append((name, _load(txn, meta, name)))
    return out


def snapshot_runs(txn: Any, meta: Any) -> list[Run]:
    """:func:`list_runs` without the names."""
    return [run for _, run in list_runs(txn, meta)]


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
    """One process's decoded runs of one generation (run names are never reused in one),
    kept as the :class:`RunSet` of the latest snapshot seen. Only committed runs may
    enter: readers use it, a writer decodes its own runs afresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = RunSet()

    def snapshot(self, txn: Any, meta: Any) -> RunSet:
        names = _names(txn, meta)
        with self._lock:
            last = self._last
            k = len(last.names)
            if last.names[: len(names)] == names:
                return last.prefix(len(names))
            base = last if names[:k] == last.names else RunSet()
            for name in names[len(base.names):]:
                base = base.extended(name, _load(txn, meta, name))
            self._last = base
            return base
