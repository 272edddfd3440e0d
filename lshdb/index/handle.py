"""The open index handle: :class:`Index`, its generation, its files and its snapshots.

Threads may share an Index: queries run concurrently, writers take the index's write lock
in turn. A forked child reopens the environment by itself on first use. When a compaction
(here or in another process) replaces the generation, the handle follows CURRENT to it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import numpy as np

from ..errors import (
    CorruptIndexError,
    IndexClosedError,
    InvalidParameterError,
    LockTimeoutError,
    LshdbError,
    NotAnIndexError,
    ReadOnlyError,
)
from ..hashing.codes import CodeColumns, SimHashCoder
from ..hashing.families import Family
from ..metrics import Metric
from ..storage import layout
from ..storage import store as store_mod
from ..storage.codec import Key, unpack_meta
from ..storage.locks import WriterLock
from ..storage.rows import RowFile, RowNorms
from ..storage.store import Store
from ..tuning import params
from . import check as check_mod
from .format import DURABILITY
from .generation import load_generation
from .reader import Reader, SnapshotContext
from .writer import Writer

__all__ = ["Index", "IndexFiles", "check"]


class IndexFiles(NamedTuple):
    """The open files of a handle's current generation (see docs/internals.md)."""

    store: Store
    rows: RowFile
    codes: RowFile | None  # the hash-code file, if codes are kept beside the rows
    code_cols: CodeColumns | None
    norms: RowNorms | None  # the rows' squared norms, for metrics that need them


class Index:
    """An open lshdb index. Use :func:`lshdb.create` or :func:`lshdb.open` to get one.

    Thread-safe: queries run concurrently, writers take the write lock in turn. Besides
    the public API, lshdb's maintenance code (writer, compaction, check, tune, backup) uses
    a small internal interface, described in ``docs/internals.md``: :meth:`files`,
    :meth:`follow_generation`, :meth:`clear_stale_readers`, :attr:`write_lock`,
    :meth:`attach_writer`, :meth:`begin_read`, :meth:`decode_state`, :meth:`set_codes` and
    :meth:`pick_up_codes`.
    """

    def __init__(self, path: str, readonly: bool = False, durability: str | None = None,
                 map_size: int | None = None) -> None:
        self.path = path
        self.readonly = readonly
        if durability is not None and durability not in DURABILITY:
            raise InvalidParameterError(
                f"durability must be one of {DURABILITY}; found {durability!r}")
        self._durability_override = durability
        if not readonly and os.path.isdir(path) and not os.access(path, os.W_OK):
            raise ReadOnlyError(f"{path} cannot be written by this process (read-only storage "
                                "or permissions); open it with readonly=True to query it")
        self._lock = WriterLock(os.path.join(path, layout.LOCK))
        self._current_path = os.path.join(path, layout.CURRENT)
        self._store: Store | None = None
        self._map_size = map_size
        self._follow_lock = threading.RLock()
        self._open_writer: Writer | None = None  # the write block open on this handle
        self._current_id: tuple[int, int] = (0, 0)
        self._load_current()
        if not readonly:
            self._recover()

    def _recover(self) -> None:
        """Remove what a crashed writer or compaction left behind, if no writer is active.

        Leftovers are temporary generation folders, generations CURRENT does not name, and
        a half-written CURRENT.tmp. Only the holder of the write lock may remove them (a
        compaction in progress holds it), so this tries the lock without waiting.
        """
        try:
            self._lock.acquire(timeout=0)
        except LockTimeoutError:
            return
        try:
            current = layout.read_current(self.path)
            for name in os.listdir(self.path):
                full = os.path.join(self.path, name)
                if name == layout.CURRENT + ".tmp":
                    os.unlink(full)
                elif layout.is_temp(name) or (layout.is_generation(name) and name != current):
                    shutil.rmtree(full, ignore_errors=True)
        finally:
            self._lock.release()

    # -- opening ---------------------------------------------------------------------
    def _load_current(self) -> None:
        """Load the generation CURRENT names, retrying if a compaction elsewhere replaces
        (and removes) it while this handle opens it."""
        for attempt in range(20):
            gen = layout.read_current(self.path)
            try:
                self._load(gen)
                return
            except (NotAnIndexError, CorruptIndexError):
                if attempt == 19 or layout.read_current(self.path) == gen:
                    raise  # CURRENT did not move: the damage is real
                time.sleep(0.001 * (attempt + 1))

    def _load(self, gen: str) -> None:
        st = os.stat(os.path.join(self.path, layout.CURRENT))
        current_id = (st.st_ino, st.st_mtime_ns)
        g = load_generation(self.path, gen, self.readonly, self._map_size)
        self.generation = gen
        self._current_id = current_id
        self.metric: Metric = g.metric
        self.config: dict[str, Any] = g.config
        self.options: dict[str, Any] = g.options
        self.settings: dict[str, Any] = g.settings
        self.family: Family | None = g.family
        self.n_tables = g.n_tables
        self.durability = self._durability_override or g.options.get("durability", "full")
        self._store = g.store
        self._rows = g.rows
        self._codes = g.codes
        self._code_cols = CodeColumns(g.codes) if g.codes is not None else None
        self._row_norms = RowNorms(g.rows) if g.metric.needs_norms else None
        self.coder: SimHashCoder | None = g.coder
        self._pid = os.getpid()
        self._last_state: tuple[bytes, dict[str, Any]] | None = None
        self._auto_codes = (g.metric.simhash_codes and "codes" not in g.options
                            and g.options.get("store") != "codes")

    # a writer block that leaves the index RECALIBRATE_GROWTH times larger or smaller than
    # its calibration retunes it (a compaction with retune=True); False turns that off
    retune_on_growth = True

    def auto_codes(self) -> bool:
        """True if the calibration may give this index hash codes (a cosine or l2 index
        whose creator said nothing about codes)."""
        return self._auto_codes

    def _ensure_open(self) -> Store:
        store = self._store
        if store is None:
            raise IndexClosedError(f"the index {self.path} is closed")
        if self._pid != os.getpid():  # forked child: never reuse the parent's environment
            self._store = None  # the parent's environment: closed in the child at fork
            self._lock = WriterLock(os.path.join(self.path, layout.LOCK))
            self._load_current()
            return self._ensure_open()
        return store

    def _follow(self) -> None:
        """Move this handle to the generation CURRENT names (after a compaction elsewhere)."""
        old_store, old_rows, old_codes = self._store, self._rows, self._codes
        self._load_current()
        if old_store is not None:
            store_mod.release(old_store)  # waits for this process's open snapshots on it
            old_rows.close()
            if old_codes is not None:
                old_codes.close()

    # -- the internal interface (docs/internals.md) ------------------------------------
    def files(self) -> IndexFiles:
        """The open files of this handle's generation (reopened first in a forked child).

        Raises
        ------
        IndexClosedError
            The handle is closed.
        """
        with self._follow_lock:
            store = self._ensure_open()
            return IndexFiles(store, self._rows, self._codes, self._code_cols, self._row_norms)

    @property
    def write_lock(self) -> WriterLock:
        """The index's write lock (a :class:`Writer` holds it for its block)."""
        return self._lock

    def attach_writer(self, writer: Writer | None) -> None:
        """Record the write block open on this handle (None when it ends), so that
        :meth:`close` can roll it back."""
        self._open_writer = writer

    def clear_stale_readers(self) -> int:
        """Free the LMDB reader slots of dead processes; returns how many were freed."""
        cleared: int = self._ensure_open().env.reader_check()
        return cleared

    def begin_read(self, owner: Any = None) -> tuple[Reader, AbstractContextManager[Any]]:
        """A :class:`Reader` on a new snapshot of the current generation, and the context
        manager holding its read transaction (the caller, ``owner``, exits it; the Reader
        keeps ``owner`` alive)."""
        for _ in range(5):
            if self._current_changed():
                self.follow_generation()
            with self._follow_lock:
                store = self._ensure_open()
                rows, codes, norms = self._rows, self._code_cols, self._row_norms
                cm = store.read()
                txn = cm.__enter__()
            try:
                reader = Reader(self, store, rows, txn, codes, norms, owner=owner)
            except BaseException:
                cm.__exit__(None, None, None)
                raise
            if reader.retired_to is None and not reader.codes_started:
                return reader, cm
            if reader.codes_started:  # another process gave this generation codes
                cm.__exit__(None, None, None)
                with self._follow_lock:
                    if self._codes is None:
                        self._follow()
                continue
            cm.__exit__(None, None, None)
            self.follow_generation()
        raise LshdbError(f"{self.path} kept changing generation; retry")

    def decode_state(self, raw: bytes) -> dict[str, Any]:
        """The ``state`` record ``raw`` decoded (the last snapshot's is not decoded again)."""
        seen = self._last_state
        if seen is not None and seen[0] == raw:
            return seen[1]
        state: dict[str, Any] = unpack_meta(raw, "state")
        self._last_state = (raw, state)
        return state

    def set_codes(self, codes: RowFile | None) -> None:
        """Give this handle's generation the hash-code file a write block has begun (None:
        forget it again, the block did not commit)."""
        self._codes = codes
        self._code_cols = CodeColumns(codes) if codes is not None else None

    def pick_up_codes(self) -> None:
        """Reopen the generation if another process's calibration has given it hash codes
        since this handle opened it."""
        if self._codes is not None or not self.auto_codes():
            return
        store = self._ensure_open()
        with store.read() as txn:
            if txn.get(b"codes", db=store.db(b"meta")) is not None:
                self._follow()

    def follow_generation(self) -> None:
        """Follow CURRENT if it names another generation than this handle's."""
        with self._follow_lock:
            gen = layout.read_current(self.path)
            if gen != self.generation:
                self._follow()
            else:
                st = os.stat(os.path.join(self.path, layout.CURRENT))
                self._current_id = (st.st_ino, st.st_mtime_ns)

    def _current_changed(self) -> bool:
        """Cheap test (one stat) for a CURRENT replaced since this handle last looked."""
        try:
            st = os.stat(self._current_path)
        except FileNotFoundError:
            return False  # mid-replace; the next look will see it
        return (st.st_ino, st.st_mtime_ns) != self._current_id

    # -- life cycle ------------------------------------------------------------------
    def close(self) -> None:
        """Close the environment and the row file. Idempotent.

        A write block left open on this handle by the calling thread is rolled back (and
        its ``with`` exit then raises :class:`IndexClosedError`); one open in another
        thread makes ``close`` raise instead.
        """
        writer = self._open_writer
        if writer is not None and self._store is not None and self._pid == os.getpid():
            if not writer.abandon():
                raise LshdbError(f"a write block on {self.path} is open in another thread; "
                                 "finish it before close()")
        if self._store is not None:
            if self._pid == os.getpid():
                store_mod.release(self._store)
                self._rows.close()
                if self._codes is not None:
                    self._codes.close()
            self._store = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # like Python's files: a handle collected while open is closed, with a warning, so
        # that its descriptors and its share of the process's environment are released
        if getattr(self, "_store", None) is None:
            return
        try:
            warnings.warn(f"unclosed lshdb index {self.path!r}; close() it or use `with`",
                          ResourceWarning, source=self, stacklevel=2)
        finally:  # (even when warnings are errors, or at interpreter exit)
            try:
                self.close()
            except Exception:  # a write block open in another thread keeps it open
                pass

    def __repr__(self) -> str:
        state = "closed" if self._store is None else self.generation
        return f"<lshdb.Index {self.path!r} metric={self.metric.name} dim={self.metric.dim} {state}>"

    # -- transactions ----------------------------------------------------------------
    def writer(self, timeout: float | None = None,
               on_wait: Callable[[], None] | None = None) -> Writer:
        """The single writer: ``with index.writer() as w: w.add(...)``.

        Everything done inside the block is one LMDB transaction, committed on a clean exit
        and discarded on an exception. Waits for other writers; with ``timeout`` (seconds)
        gives up with :class:`LockTimeoutError`. ``on_wait()`` is called once before
        waiting, when another writer holds the lock.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened read-only; open it with readonly=False")
        self._ensure_open()
        return Writer(self, timeout, on_wait)

    def reader(self) -> AbstractContextManager[Reader]:
        """A consistent snapshot for several reads: ``with index.reader() as r: ...``."""
        return SnapshotContext(self)

    # -- one-shot forms --------------------------------------------------------------
    def add(self, keys: Iterable[Key], vectors: Any, skip_existing: bool = False) -> int:
        """Add new items in one transaction; see :meth:`Writer.add`."""
        with self.writer() as w:
            return w.add(keys, vectors, skip_existing=skip_existing)

    def upsert(self, keys: Iterable[Key], vectors: Any) -> int:
        """Add or replace items in one transaction; see :meth:`Writer.upsert`."""
        with self.writer() as w:
            return w.upsert(keys, vectors)

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        """Delete items in one transaction; see :meth:`Writer.delete`."""
        with self.writer() as w:
            return w.delete(keys, missing_ok=missing_ok)

    def query(self, vector: Any, k: int | None = 10, probes: int | None = None,
              candidates: int | None = None, min_hits: int | None = None,
              threshold: float | None = None, exact: bool | None = None,
              rerank: int | None = None, scan: bool | None = None) -> list[tuple[Key, float]]:
        """The ``k`` nearest stored items: ``[(key, distance), ...]``, best first (under
        jaccard ``[(key, jaccard), ...]``); see :meth:`Reader.query` for the parameters."""
        r, cm = self.begin_read()  # (no SnapshotContext: the snapshot ends in this call)
        try:
            out = r.query(vector, k, probes, candidates, min_hits, threshold, exact, rerank, scan)
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)  # (an lmdb error is translated)
            raise
        cm.__exit__(None, None, None)
        return out

    def query_batch(self, vectors: Any, k: int | None = 10, probes: int | None = None,
                    candidates: int | None = None, min_hits: int | None = None,
                    threshold: float | None = None, exact: bool | None = None,
                    rerank: int | None = None,
                    scan: bool | None = None) -> list[list[tuple[Key, float]]]:
        """:meth:`query` for each row of a 2-D array, in one snapshot."""
        with SnapshotContext(self) as r:
            return r.query_batch(vectors, k, probes=probes, candidates=candidates,
                                 min_hits=min_hits, threshold=threshold, exact=exact,
                                 rerank=rerank, scan=scan)

    def candidates(self, vector: Any, probes: int | None = None,
                   candidates: int | None = None,
                   min_hits: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Raw candidate ids of one query and statistics about how they were found."""
        with SnapshotContext(self) as r:
            return r.candidates(vector, probes=probes, candidates=candidates,
                                min_hits=min_hits)

    def bucket_ids(self, vectors: Any) -> np.ndarray:
        """Bucket keys of the rows of ``vectors`` in each table; see :meth:`Reader.bucket_ids`."""
        with SnapshotContext(self) as r:
            return r.bucket_ids(vectors)

    def get(self, key: Key) -> np.ndarray:
        """A copy of the stored vector of ``key`` (under cosine: normalised)."""
        with SnapshotContext(self) as r:
            return r.get(key)

    def keys(self) -> list[Key]:
        """Every key, in internal-id order."""
        with SnapshotContext(self) as r:
            return list(r.keys())

    def __len__(self) -> int:
        with SnapshotContext(self) as r:
            return len(r)

    def __contains__(self, key: object) -> bool:
        with SnapshotContext(self) as r:
            return key in r

    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """Parameters, counts, bucket-size distribution per table and bytes on disk by part."""
        with SnapshotContext(self) as r:
            return r.stats(buckets=buckets)

    def set_query_defaults(self, **settings: Any) -> None:
        """Store query-time defaults (``probes``, ``min_hits``, ``candidates``, ``rerank``,
        ``scan``) in the index; settings not named keep their stored values."""
        new = {**self.settings,
               **params.validate_options(self.metric.name, settings, query_only=True)}
        with self.writer() as w:
            w.put_meta(b"settings", new)
        self.settings = new

    def tune(self, target_recall: float = 0.9, k: int = 10, n_queries: int = 200,
             seed: int = 0, apply: bool = False, progress: Any = None) -> dict[str, Any]:
        """Measure the recall/speed frontier of query settings; see :mod:`lshdb.index.tune`."""
        from .tune import tune

        return tune(self, target_recall, k, n_queries, seed, apply, progress)

    def compact(self, timeout: float | None = None, retune: bool = False,
                progress: Any = None,
                on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
        """Rewrite the live items into a new generation and swap it in; see
        :mod:`lshdb.index.compact`. Readers keep answering throughout."""
        from .compact import compact

        return compact(self, timeout=timeout, retune=retune, progress=progress,
                       on_wait=on_wait)

    def backup(self, dest: str | os.PathLike[str], progress: Any = None) -> dict[str, Any]:
        """Write a consistent copy of the index, as of one snapshot, to the new path
        ``dest`` while readers and writers carry on; see :mod:`lshdb.index.backup`."""
        from .backup import backup

        return backup(self, dest, progress=progress)

    def check(self, fix: bool = False, progress: Any = None,
              isolate: bool = False, drop_damaged: bool = False) -> dict[str, Any]:
        """Deep integrity check of this index's directory (its committed state, through a
        handle of its own); see :func:`check`. ``fix=True, drop_damaged=True`` removes the
        items whose rows fail their checksum and lists their keys in the report's
        ``dropped``."""
        return check(self.path, fix=fix, progress=progress, isolate=isolate,
                     drop_damaged=drop_damaged)

    def reader_slots(self, clear_stale: bool = False) -> dict[str, int]:
        """LMDB reader slots of this index: ``max``, ``used``, ``active`` and ``cleared``.

        Every process reading the index holds a slot per concurrent snapshot; a process
        killed while holding one leaves it taken until ``clear_stale=True`` (LMDB's
        ``reader_check``) frees the slots of processes that no longer exist.
        """
        return self._ensure_open().reader_slots(clear_stale)

    def sync(self) -> None:
        """Flush everything to disk (useful after writes in ``durability="fast"``)."""
        store = self._ensure_open()
        self._rows.sync()
        store.sync()


def _open_readonly(path: str) -> Index:
    return Index(path, readonly=True)


def _open_writable(path: str) -> Index:
    return Index(path)


def check(path: str | os.PathLike[str], fix: bool = False,
          progress: Callable[[str, int, int], None] | None = None,
          isolate: bool = False, drop_damaged: bool = False) -> dict[str, Any]:
    """Deep integrity check of the index at ``path``: returns ``{"ok", "problems", "fixed",
    "counts"}``; see :mod:`lshdb.index.check` for what is checked and what ``fix`` repairs.
    ``isolate=True`` runs it in a child process, which survives a damaged LMDB page.
    ``fix=True, drop_damaged=True`` removes the items whose rows fail their checksum and
    lists their keys in the report's ``dropped``."""
    return check_mod.check(os.fspath(path), _open_readonly, fix=fix, progress=progress,
                           isolate=isolate, drop_damaged=drop_damaged,
                           open_writable=_open_writable)
