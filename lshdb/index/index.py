"""The public facade: ``create``, ``open``, :class:`Index` and its :class:`Writer`.

Workflow::

    index = lshdb.create("vectors.lshdb", metric="cosine", dim=384)
    with index.writer() as w:        # one LMDB write transaction
        w.add(keys, vectors)
    index.query(q, k=10)             # [(key, distance), ...] best first, exact distances

Threads may share an Index: queries run concurrently, writers take the index's write lock
in turn. A forked child reopens the environment by itself on first use.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import lmdb
import numpy as np

from ..errors import (
    CorruptIndexError,
    DuplicateKeyError,
    FormatVersionError,
    IndexClosedError,
    IndexExistsError,
    InvalidParameterError,
    KeyExistsError,
    KeyNotFoundError,
    LockTimeoutError,
    LshdbError,
    NotAnIndexError,
    ReadOnlyError,
)
from ..hashing.codes import CODES_NAME, CodeColumns, SimHashCoder
from ..hashing.families import Family
from ..hashing.registry import family_from_params
from ..metrics import Metric, get_metric
from ..storage import layout, postings, runs
from ..storage import store as store_mod
from ..storage.codec import MAX_ROWS, Key, mark_format, pack_ids, pack_keys, pack_meta, unpack_meta
from ..storage.rows import ROWS_NAME, RowFile, RowNorms
from ..storage.store import Store, WriterLock, table_name
from ..tuning import params
from . import check as check_mod
from .blas import enter_single, exit_single, for_rows, single_threaded
from .reader import Reader

if TYPE_CHECKING:
    from ..metrics.sets import JaccardMetric

__all__ = ["create", "open", "check", "Index", "Writer", "FORMAT_VERSION"]

FORMAT_VERSION = 3  # the newest format this lshdb writes
# format 1: no runs (lshdb.runs); 3: float16 rows or codes that the calibration chose (an
# lshdb that reads only 1 and 2 would misread those rows, or write rows without codes).
# An index is marked with the oldest format that describes it.
READABLE_FORMATS = (1, 2, 3)
DURABILITY = ("full", "fast")
_open = open  # the builtin, shadowed by lshdb.open below


def create(path: str | os.PathLike[str], metric: str, dim: int | None = None,
           **options: Any) -> Index:
    """Create a new, empty index directory at ``path`` and return it opened for writing.

    Parameters
    ----------
    path : str or PathLike
        Must not exist yet (or be an empty directory).
    metric : {"cosine", "l2", "l1", "hamming", "jaccard"}
    dim : int
        Vector dimension (for ``hamming``: the number of bits, a multiple of 8).
    **options
        ``family`` (``hyperplane``; ``pstable``; ``unary`` for l1 on small ints;
        ``bitsample``), ``k`` (functions per table), ``L`` (tables), ``w`` (p-stable width),
        ``seed``, ``max_value`` (unary), ``probes`` and ``candidates`` (query defaults),
        ``durability`` (``"full"`` or ``"fast"``), ``map_size`` (initial LMDB map, grown on
        demand). Parameters left out are chosen from the first batch added; see
        docs/tuning.md. Under ``jaccard``: ``num_perm``, ``threshold``, ``bands`` and
        ``rows``, ``mode`` (``"oph"``, or ``"classic"`` for datasketch-compatible
        signatures), ``seed`` (default 0; 1 under ``"classic"``, as datasketch's
        ``MinHash``; stored, and shown by ``stats()``), ``scheme``, ``shingle`` and
        ``store_tokens``.

    Raises
    ------
    InvalidParameterError
        Unknown metric, option name or out-of-range value.
    IndexExistsError
        ``path`` exists and is not an empty directory.
    """
    path = os.fspath(path)
    if not isinstance(metric, str):
        raise InvalidParameterError(f"metric must be a name; found {metric!r}")
    opts = params.validate_options(metric, options) if metric in params.DEFAULT_FAMILY \
        else options
    m = get_metric(metric, dim, opts)
    if m.name == "jaccard":
        opts = dict(cast("JaccardMetric", m).options)  # filled in; num_perm = dim if given
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise IndexExistsError(f"{path} already exists; choose a new path or open() it")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    gen = layout.gen_name(1)
    try:
        os.makedirs(os.path.join(tmp, gen))
        fam = params.family_if_complete(m, opts)
        n_tables = opts.get("L") or (fam.L if fam else params.default_L(m.name, opts))
        store = Store(os.path.join(tmp, gen), create=True, n_tables=n_tables,
                      map_size=opts.get("map_size"))
        try:
            config = {"metric": m.name, "dim": m.dim, "options": opts, "created": time.time()}
            if m.name == "jaccard":
                config["dim"] = m.dim
            with store.env.begin(write=True) as txn:
                meta = store.db(b"meta")
                txn.put(b"format", pack_meta(
                    {"format_version": 3 if opts.get("dtype") == "float16" else 2}), db=meta)
                txn.put(b"config", pack_meta(config), db=meta)
                txn.put(b"settings", pack_meta(params.query_settings(opts)), db=meta)
                txn.put(b"state", pack_meta({"rows": 0, "live": 0}), db=meta)
                if fam is not None:
                    txn.put(b"family", pack_meta(fam.params()), db=meta)
            store.sync()
        finally:
            store.close()
        RowFile(os.path.join(tmp, gen, ROWS_NAME), m.row_dim(), m.row_dtype,
                writable=True, create=True).close()
        if opts.get("codes") and opts.get("store") != "codes":
            RowFile(os.path.join(tmp, gen, CODES_NAME), opts["codes"] // 8, np.dtype(np.uint8),
                    writable=True, create=True, checked=False).close()
        layout.write_current(tmp, gen)
        if os.path.isdir(path):
            os.rmdir(path)
        os.rename(tmp, path)
        layout.fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Index(path, readonly=False, map_size=opts.get("map_size"))


def open(path: str | os.PathLike[str], readonly: bool = False,
         durability: str | None = None, map_size: int | None = None) -> Index:
    """Open an existing index.

    ``durability`` overrides the stored default for this handle's writes; ``map_size`` sets
    this process's initial LMDB map (it grows on demand; rarely worth setting).

    Raises
    ------
    NotAnIndexError
        ``path`` is not an lshdb index.
    FormatVersionError
        The index was written by a newer (or unknown) format version.
    CorruptIndexError
        Its files fail validation.
    """
    return Index(os.fspath(path), readonly=readonly, durability=durability, map_size=map_size)


class Index:
    """An open lshdb index. Use :func:`create` or :func:`open` to get one."""

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
        self._retired: list[Any] = []
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
        gen_dir = os.path.join(self.path, gen)
        store = store_mod.acquire(gen_dir, map_size=self._map_size)
        try:
            with store.read() as txn:
                meta = store.db(b"meta")
                fmt = _get_meta(txn, meta, b"format")
                version = fmt.get("format_version") if isinstance(fmt, dict) else None
                if version not in READABLE_FORMATS or isinstance(version, bool):
                    raise FormatVersionError(
                        f"{self.path} has format version {version!r}; this lshdb reads versions "
                        f"{', '.join(map(str, READABLE_FORMATS))}. Upgrade lshdb to open it.")
                config = _get_meta(txn, meta, b"config")
                settings = _get_meta(txn, meta, b"settings")
                fam_raw = txn.get(b"family", db=meta)
                codes_raw = txn.get(b"codes", db=meta)
            opts = config.get("options", {})
            metric = get_metric(config["metric"], config["dim"], opts)
            family = (family_from_params(metric.hash_dim(), unpack_meta(bytes(fam_raw), "family"))
                      if fam_raw is not None else None)
            n_tables = family.L if family else opts.get("L") or params.default_L(metric.name, opts)
            store.open_dbs([table_name(t) for t in range(n_tables)])
            try:
                rows = RowFile(os.path.join(gen_dir, ROWS_NAME), metric.row_dim(),
                               metric.row_dtype, writable=not self.readonly)
                code_bytes = _code_bytes(opts, codes_raw)
                codes = RowFile(os.path.join(gen_dir, CODES_NAME), code_bytes,
                                np.dtype(np.uint8), writable=not self.readonly, checked=False) \
                    if code_bytes else None
            except FileNotFoundError as exc:
                raise CorruptIndexError(f"{gen_dir} lacks a row file ({exc.filename}); the "
                                        "index is damaged") from exc
        except (KeyError, TypeError) as exc:
            store_mod.release(store)
            raise CorruptIndexError(f"{self.path}: meta records are malformed ({exc})") from exc
        except BaseException:
            store_mod.release(store)
            raise
        self.generation = gen
        self._current_id = current_id
        self.metric: Metric = metric
        self.config: dict[str, Any] = config
        self.options: dict[str, Any] = opts
        self.settings: dict[str, Any] = settings
        self.family: Family | None = family
        self.n_tables = n_tables
        self.durability = self._durability_override or opts.get("durability", "full")
        self._store = store
        self._rows = rows
        self._codes = codes
        self._code_cols = CodeColumns(codes) if codes is not None else None
        self._row_norms = RowNorms(rows) if metric.name == "l2" else None
        self.coder: SimHashCoder | None = (
            SimHashCoder.from_params(metric.dim, unpack_meta(bytes(codes_raw), "codes"))
            if codes_raw is not None else None)
        self._pid = os.getpid()
        self._last_state: tuple[bytes, dict[str, Any]] | None = None
        self._auto_codes = (metric.name in ("cosine", "l2") and "codes" not in opts
                            and opts.get("store") != "codes")

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
            self._retired.append((self._store, self._rows))
            self._store = None
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

    def _check_current(self) -> None:
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
            if not writer._abandon():
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

    def __repr__(self) -> str:
        state = "closed" if self._store is None else self.generation
        return f"<lshdb.Index {self.path!r} metric={self.metric.name} dim={self.metric.dim} {state}>"

    # -- transactions ----------------------------------------------------------------
    def writer(self, timeout: float | None = None) -> Writer:
        """The single writer: ``with index.writer() as w: w.add(...)``.

        Everything done inside the block is one LMDB transaction, committed on a clean exit
        and discarded on an exception. Waits for other writers; with ``timeout`` (seconds)
        gives up with :class:`LockTimeoutError`.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened read-only; open it with readonly=False")
        self._ensure_open()
        return Writer(self, timeout)

    def reader(self) -> AbstractContextManager[Reader]:
        """A consistent snapshot for several reads: ``with index.reader() as r: ...``."""
        return _ReaderContext(self)

    def _snapshot(self) -> _ReaderContext:
        return _ReaderContext(self)

    # -- one-shot forms --------------------------------------------------------------
    def add(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add new items in one transaction; see :meth:`Writer.add`."""
        with self.writer() as w:
            w.add(keys, vectors)

    def upsert(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add or replace items in one transaction; see :meth:`Writer.upsert`."""
        with self.writer() as w:
            w.upsert(keys, vectors)

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        """Delete items in one transaction; see :meth:`Writer.delete`."""
        with self.writer() as w:
            return w.delete(keys, missing_ok=missing_ok)

    def query(self, vector: Any, k: int = 10, **kw: Any) -> list[tuple[Key, float]]:
        """The ``k`` nearest stored items: ``[(key, distance), ...]``, best first."""
        with self._snapshot() as r:
            return r.query(vector, k, **kw)

    def query_batch(self, vectors: Any, k: int = 10, **kw: Any) -> list[list[tuple[Key, float]]]:
        """:meth:`query` for each row of a 2-D array, in one snapshot."""
        with self._snapshot() as r:
            return r.query_batch(vectors, k, **kw)

    def candidates(self, vector: Any, **kw: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Raw candidate ids of one query and statistics about how they were found."""
        with self._snapshot() as r:
            return r.candidates(vector, **kw)

    def bucket_ids(self, vectors: Any) -> np.ndarray:
        """Bucket keys of the rows of ``vectors`` in each table; see :meth:`Reader.bucket_ids`."""
        with self._snapshot() as r:
            return r.bucket_ids(vectors)

    def get(self, key: Key) -> np.ndarray:
        """A copy of the stored vector of ``key`` (under cosine: normalised)."""
        with self._snapshot() as r:
            return r.get(key)

    def keys(self) -> list[Key]:
        """Every key, in internal-id order."""
        with self._snapshot() as r:
            return list(r.keys())

    def __len__(self) -> int:
        with self._snapshot() as r:
            return len(r)

    def __contains__(self, key: object) -> bool:
        with self._snapshot() as r:
            return key in r

    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """Parameters, counts, bucket-size distribution per table and bytes on disk by part."""
        with self._snapshot() as r:
            return r.stats(buckets=buckets)

    def set_query_defaults(self, **settings: Any) -> None:
        """Store query-time defaults (``probes``, ``min_hits``, ``candidates``, ``rerank``,
        ``scan``) in the index; settings not named keep their stored values."""
        new = {**self.settings,
               **params.validate_options(self.metric.name, settings, query_only=True)}
        with self.writer() as w:
            w._txn.put(b"settings", pack_meta(new), db=w._store.db(b"meta"))
        self.settings = new

    def tune(self, target_recall: float = 0.9, k: int = 10, n_queries: int = 200,
             seed: int = 0, apply: bool = False, progress: Any = None) -> dict[str, Any]:
        """Measure the recall/speed frontier of query settings; see :mod:`lshdb.tuner`."""
        from .tune import tune

        return tune(self, target_recall, k, n_queries, seed, apply, progress)

    def compact(self, timeout: float | None = None, retune: bool = False,
                progress: Any = None) -> dict[str, Any]:
        """Rewrite the live items into a new generation and swap it in; see
        :mod:`lshdb.compact`. Readers keep answering throughout."""
        from .compact import compact

        return compact(self, timeout=timeout, retune=retune, progress=progress)

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


class _ReaderContext(AbstractContextManager):  # type: ignore[type-arg]
    def __init__(self, index: Index) -> None:
        self.index = index
        self._cm: Any = None

    def __enter__(self) -> Reader:
        enter_single()  # OpenBLAS on one thread while the snapshot is open (lshdb.blas)
        try:
            return self._enter()
        except BaseException:
            exit_single()
            raise

    def _enter(self) -> Reader:
        index = self.index
        for _ in range(5):
            if index._current_changed():
                index._check_current()
            with index._follow_lock:
                store = index._ensure_open()
                rows, codes, norms = index._rows, index._code_cols, index._row_norms
                self._cm = store.read()
                txn = self._cm.__enter__()
            try:
                reader = Reader(index, store, rows, txn, codes, norms)
            except BaseException:
                self._cm.__exit__(None, None, None)
                raise
            if reader.retired_to is None and not reader.codes_started:
                return reader
            if reader.codes_started:  # another process gave this generation codes
                self._cm.__exit__(None, None, None)
                with index._follow_lock:
                    if index._codes is None:
                        index._follow()
                continue
            self._cm.__exit__(None, None, None)
            index._check_current()
        raise LshdbError(f"{index.path} kept changing generation; retry")

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cm.__exit__(*exc)
        finally:
            exit_single()


class Writer:
    """The single writer of an index; use as ``with index.writer() as w``.

    Not thread-safe: use it from the thread that entered the block (py-lmdb's rule for
    write transactions).
    """

    def __init__(self, index: Index, timeout: float | None) -> None:
        self._index = index
        self._timeout = timeout
        self._txn: Any = None
        self._log: list[tuple[str, tuple[Any, ...]]] = []
        self._retired_to: str | None = None

    # -- transaction -----------------------------------------------------------------
    def __enter__(self) -> Writer:
        index = self._index
        index._lock.acquire(self._timeout)
        enter_single()  # OpenBLAS on one thread while the block is open (lshdb.blas)
        try:
            index._check_current()
            self._begin()
        except BaseException:
            exit_single()
            index._lock.release()
            raise
        index._open_writer = self
        return self

    def _abandon(self) -> bool:
        """Roll this open block back and release the lock (the index is being closed);
        False if another thread holds it."""
        index = self._index
        if self._txn is None or not index._lock.held_here():
            return self._txn is None
        try:
            self._txn.abort()
            self._drop_new_codes()
        finally:
            self._txn = None
            index._open_writer = None
            exit_single()
            index._lock.release()
        return True

    def _begin(self) -> None:
        index = self._index
        self._new_codes: RowFile | None = None
        self._chosen_codes = 0
        self._changed = self._retune = False  # rows added or deleted; calibration stale
        if index._codes is None and index.auto_codes():
            store = index._ensure_open()
            with store.read() as txn:  # codes started by another process's calibration
                if txn.get(b"codes", db=store.db(b"meta")) is not None:
                    index._follow()
        self._store = index._ensure_open()
        self._rows = index._rows
        self._family = index.family
        self._coder = index.coder
        self._settings = dict(index.settings)
        self._txn = self._store.begin_write()
        state = _get_meta(self._txn, self._store.db(b"meta"), b"state")
        self._committed_rows = int(state["rows"])
        self._n_rows = self._committed_rows
        self._live = int(state["live"])
        self._runs = int(state.get("runs", 0))
        self._run_seq = int(state.get("run_seq", 0))
        self._wrote_rows = False

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._exit(exc_type)
        if exc_type is None and self._retune and self._index.retune_on_growth:
            # the index outgrew (or lost most of) the rows it was calibrated for: choose
            # again, in a compaction (crash-safe; readers keep answering meanwhile)
            try:
                self._index.compact(timeout=self._timeout, retune=True)
            except LshdbError as exc:  # the block's writes are committed all the same
                warnings.warn(f"{self._index.path}: retuning for {self._live} live rows "
                              f"failed ({exc}); run compact(retune=True)", stacklevel=2)

    def _exit(self, exc_type: Any) -> None:
        index = self._index
        if self._txn is None:  # rolled back when the index was closed inside the block
            if exc_type is None:
                raise IndexClosedError(f"the index {index.path} was closed inside this "
                                       "writer block; its writes were rolled back")
            return
        try:
            if exc_type is not None:
                self._txn.abort()
                self._drop_new_codes()
                return
            self._commit()
        finally:
            self._txn = None
            index._open_writer = None
            exit_single()
            index._lock.release()

    def _commit(self) -> None:
        index = self._index
        while True:
            try:
                if self._wrote_rows:
                    self._rows.sync()  # rows before postings
                    if index._codes is not None:
                        index._codes.sync()
                state: dict[str, Any] = {"rows": self._n_rows, "live": self._live}
                if self._runs:
                    state["runs"] = self._runs
                if self._run_seq:
                    state["run_seq"] = self._run_seq
                if self._retired_to:
                    state["retired_to"] = self._retired_to
                meta = self._store.db(b"meta")
                self._txn.put(b"state", pack_meta(state), db=meta)
                self._retune = self._changed and self._stale(meta)
                self._txn.commit()
                break
            except lmdb.MapFullError:
                self._regrow()
        if index.durability == "full":
            self._store.sync()  # covers the pages, then the meta page too: survives a power cut
        else:
            self._store.cover_pages()
        index.family = self._family
        index.coder = self._coder
        index.settings = self._settings

    def _stale(self, meta: Any) -> bool:
        """True if the calibration this block commits with is stale (see
        :func:`params.stale_calibration`); never for parameters the caller fixed."""
        raw = self._txn.get(b"calibration", db=meta)
        if raw is None or params.family_if_complete(self._index.metric,
                                                    self._index.options) is not None:
            return False
        cal = unpack_meta(raw, "calibration")
        return params.stale_calibration(int(cal.get("live_rows", cal.get("sample_rows", 0))),
                                        self._live)

    def _regrow(self) -> None:
        """After MapFullError: abort, double the map, replay this block's operations."""
        self._txn.abort()
        self._drop_new_codes()
        self._store.grow()
        self._begin()
        for op, args in self._log:
            getattr(self, "_do_" + op)(*args)

    def _run(self, op: str, *args: Any) -> Any:
        if self._txn is None:
            raise LshdbError("the writer is not active; use it inside `with index.writer()`")
        while True:
            try:
                result = getattr(self, "_do_" + op)(*args)
                self._log.append((op, args))
                return result
            except lmdb.MapFullError:
                self._regrow()

    # -- public operations -----------------------------------------------------------
    def add(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add new items.

        Raises
        ------
        InvalidVectorError, DimensionMismatchError
            Bad vectors (nothing is written).
        DuplicateKeyError
            A key appears twice in the batch.
        KeyExistsError
            A key is already in the index (use :meth:`upsert` to replace it).
        """
        self._run("add", *self._prepare(keys, vectors))

    def upsert(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add items, replacing the vectors of keys that already exist."""
        self._run("upsert", *self._prepare(keys, vectors))

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        """Delete items; returns how many were deleted.

        Raises
        ------
        KeyNotFoundError
            A key is not in the index (unless ``missing_ok``); nothing is deleted.
        """
        keys_n, packed = pack_keys(_as_list(keys))
        _check_unique(keys_n, packed)
        result: int = self._run("delete", keys_n, packed, missing_ok)
        return result

    # -- implementation --------------------------------------------------------------
    def _prepare(self, keys: Iterable[Key], vectors: Any
                 ) -> tuple[list[Key], list[bytes], np.ndarray, Any]:
        index = self._index
        X, extra = index.metric.prepare_items(vectors)
        if index.options.get("store_tokens") and extra is None:
            raise InvalidParameterError(
                "this index stores token hashes for exact scores: give documents or token "
                "sets, not ready signatures")
        raw_keys = _as_list(keys)
        if len(raw_keys) != len(X):
            raise InvalidParameterError(
                f"{len(raw_keys)} keys for {len(X)} vectors; pass one key per row")
        keys_n, packed = pack_keys(raw_keys)
        _check_unique(keys_n, packed)
        params.validate_rows(self._family or index.family, X, index.options)
        return keys_n, packed, X, extra

    def _calibrate(self, sample: np.ndarray) -> Family:
        """Choose the family and default probes from the rows held so far (one time)."""
        index = self._index
        fam, settings, summary = params.choose_family(index.metric, index.options, sample)
        if fam.L != index.n_tables:
            raise CorruptIndexError("the chosen number of tables differs from the stored one")
        params.validate_rows(fam, sample, index.options)
        merged = {k: (v if v is not None else settings.get(k))
                  for k, v in {**settings, **self._settings}.items()}
        meta = self._store.db(b"meta")
        self._txn.put(b"family", pack_meta(fam.params()), db=meta)
        self._txn.put(b"settings", pack_meta(merged), db=meta)
        self._txn.put(b"calibration", pack_meta(summary), db=meta)
        self._family = fam
        self._settings = merged
        self._chosen_codes = int(summary.get("codes") or 0)
        return fam

    def _start_codes(self, bits: int, live: np.ndarray, first: int, X: np.ndarray) -> None:
        """Give this generation the hash codes its calibration chose: every row written so
        far (this block's included) gets its code, and the ``codes`` record commits with
        the block. Until then no committed state names the file, so one left by a crashed
        writer is replaced."""
        index = self._index
        path = os.path.join(index.path, index.generation, CODES_NAME)
        if os.path.exists(path):
            os.unlink(path)
        f = RowFile(path, bits // 8, np.dtype(np.uint8), writable=True, create=True,
                    checked=False)
        centre = live.mean(axis=0) if index.metric.name == "l2" else None
        coder = SimHashCoder(index.metric.dim, bits, index.options.get("seed", 0), centre)
        for s in range(0, first, 65536):
            stop = min(first, s + 65536)
            f.write(s, coder.encode(self._rows.read(np.arange(s, stop), first)))
        f.write(first, coder.encode(X))
        self._txn.put(b"codes", pack_meta(coder.params()), db=self._store.db(b"meta"))
        mark_format(self._txn, self._store.db(b"meta"), 3)
        self._coder = coder
        self._new_codes = index._codes = f
        index._code_cols = CodeColumns(f)
        self._wrote_rows = True

    def _drop_new_codes(self) -> None:
        """Forget codes begun by this block, which did not commit."""
        f, self._new_codes = self._new_codes, None
        if f is not None:
            index = self._index
            index._codes = index._code_cols = None
            f.close()
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass

    def _live_ids(self) -> np.ndarray:
        cursor = self._txn.cursor(self._store.db(b"id2key"))
        return np.array([int.from_bytes(k, "big") for k in cursor.iternext(values=False)],
                        dtype=np.int64)

    def _ids_of(self, packed: list[bytes]) -> dict[bytes, int]:
        cursor = self._txn.cursor(self._store.db(b"key2id"))
        return {k: int.from_bytes(v, "big") for k, v in cursor.getmulti(packed)}

    def _do_add(self, keys: list[Key], packed: list[bytes], X: np.ndarray, extra: Any) -> None:
        existing = self._ids_of(packed)
        if existing:
            first = next(k for k, p in zip(keys, packed) if p in existing)
            raise KeyExistsError(
                f"{len(existing)} of {len(keys)} keys are already in the index (first: "
                f"{first!r}); use upsert() to replace them")
        self._insert(packed, X, extra)

    def _insert(self, packed: list[bytes], X: np.ndarray, extra: Any = None) -> None:
        n = len(X)
        first = self._n_rows
        if first + n > MAX_ROWS:
            raise InvalidParameterError(
                f"a generation holds at most {MAX_ROWS} rows; compact the index first")
        self._rows.write(first, X)
        self._wrote_rows = True
        codes_file = self._index._codes
        if codes_file is not None:
            if self._coder is None:  # fixed with the first batch (its mean is the l2 centre)
                centre = X.mean(axis=0) if self._index.metric.name == "l2" else None
                self._coder = SimHashCoder(self._index.metric.dim,
                                           self._index.options["codes"],
                                           self._index.options.get("seed", 0), centre)
                self._txn.put(b"codes", pack_meta(self._coder.params()),
                              db=self._store.db(b"meta"))
            codes_file.write(first, self._coder.encode(X))
        ids = np.arange(first, first + n, dtype=np.int64)
        family = self._family
        post_ids, post_X = ids, X
        if family is None and self._live + n >= params.CALIBRATE_MIN:
            # enough rows to choose parameters: calibrate, then post the pending rows too
            old_ids = self._live_ids()
            if len(old_ids):
                post_X = np.concatenate([self._rows.read(old_ids, first), X])
                post_ids = np.concatenate([old_ids, ids])
            params.time_paths(self._index.metric, self._index.options, len(post_X),
                              single_threaded)
            with for_rows(len(post_X)):
                family = self._calibrate(post_X)
                if self._chosen_codes and self._index._codes is None:
                    self._start_codes(self._chosen_codes, post_X, first, X)
        txn, store = self._txn, self._store
        if family is not None:
            with for_rows(len(post_X)):
                H = family.hash(post_X)
            self._post(family.L, H, post_ids)
        id_bytes = pack_ids(ids)
        order = sorted(range(n), key=packed.__getitem__)
        txn.cursor(store.db(b"key2id")).putmulti(
            list(zip(map(packed.__getitem__, order), map(id_bytes.__getitem__, order))),
            overwrite=False)
        txn.cursor(store.db(b"id2key")).putmulti(list(zip(id_bytes, packed)), append=True)
        if extra is not None and self._index.options.get("store_tokens"):
            offsets, hashes = extra
            raw = np.ascontiguousarray(hashes, dtype="<u8").tobytes()
            txn.cursor(store.db(b"tokens")).putmulti(
                [(id_bytes[j], raw[8 * int(offsets[j]) : 8 * int(offsets[j + 1])])
                 for j in range(n)], append=True)
        self._n_rows += n
        self._live += n
        self._changed = True

    def _post(self, L: int, H: np.ndarray, ids: np.ndarray) -> None:
        """Post ``ids`` (hashes ``H``, one column per table): a small batch into a new
        run, anything else (and the runs waiting) into the tables (:mod:`lshdb.runs`)."""
        txn, store = self._txn, self._store
        dbs = [store.db(table_name(t)) for t in range(L)]
        empty = [txn.stat(db)["entries"] == 0 for db in dbs]
        if not any(empty) and len(ids) * L < runs.DIRECT_PAIRS and self._runs < runs.RUN_MAX:
            self._put_run(np.repeat(np.arange(L), len(ids)), H.T.ravel(), np.tile(ids, L))
            return
        waiting = self._take_runs()
        for t, db in enumerate(dbs):
            buckets, post = H[:, t], ids
            if waiting:
                parts = [r.table(t) for r in waiting]
                buckets = np.concatenate([buckets] + [b for b, _ in parts])
                post = np.concatenate([post] + [i for _, i in parts])
            if empty[t]:
                postings.bulk_load(txn.cursor(db), buckets, post)
            else:
                postings.append(txn, db, buckets, post)

    def _put_run(self, tables: np.ndarray, buckets: np.ndarray, ids: np.ndarray) -> None:
        """Write a new run under the next sequence number (never reused in a generation:
        readers keep decoded runs by name)."""
        meta = self._store.db(b"meta")
        mark_format(self._txn, meta, 2)  # format 1 has no runs
        self._txn.put(runs.run_key(self._run_seq), runs.encode_run(tables, buckets, ids),
                      db=meta)
        self._run_seq += 1
        self._runs += 1

    def _waiting_runs(self) -> list[tuple[bytes, runs.Run]]:
        """The runs of this transaction, decoded privately (an uncommitted run must not
        reach the cache readers share)."""
        if not self._runs:
            return []
        found = runs.list_runs(self._txn, self._store.db(b"meta"))
        if len(found) != self._runs:
            raise CorruptIndexError(f"the state counts {self._runs} runs but {len(found)} "
                                    "are stored; run `lshdb check`")
        return found

    def _take_runs(self) -> list[runs.Run]:
        """Remove the waiting runs from the snapshot and return them decoded."""
        found = self._waiting_runs()
        meta = self._store.db(b"meta")
        for name, _ in found:
            self._txn.delete(name, db=meta)
        self._runs = 0
        return [run for _, run in found]

    def _remove_from_runs(self, ids: np.ndarray, L: int) -> np.ndarray:
        """Remove ``ids`` (sorted) from the runs that hold them (each such run is replaced
        by a new one without them); returns the ids the runs did not hold."""
        found = self._waiting_runs()
        if not found:
            return ids
        meta = self._store.db(b"meta")
        held = np.zeros(len(ids), dtype=bool)
        for name, run in found:
            gone = np.isin(run.ids, ids)
            n_gone = int(gone.sum())
            if not n_gone:
                continue
            where = np.searchsorted(ids, np.unique(run.ids[gone]))
            held[where] = True
            if n_gone != L * len(where):
                raise CorruptIndexError(
                    f"run {name.decode()} holds {n_gone} entries of {len(where)} deleted ids "
                    f"in {L} tables; run `lshdb check`")
            self._txn.delete(name, db=meta)
            self._runs -= 1
            keep = ~gone
            if keep.any():
                self._put_run(run.tables[keep], run.buckets[keep], run.ids[keep])
        return ids[~held]

    def _remove_ids(self, ids: np.ndarray, packed: list[bytes]) -> None:
        self._changed = True
        family = self._family
        txn, store = self._txn, self._store
        if family is not None:  # before calibration there are no postings
            rest = self._remove_from_runs(ids, family.L)
            # a row that fails its checksum cannot give its buckets: its id is looked for
            # in every bucket instead (slow, and only for such rows)
            damaged = self._rows.damaged(rest, self._n_rows)
            lost, rest = rest[damaged], rest[~damaged]
            if len(rest):
                H = family.hash(self._rows.read(rest, self._n_rows))
            for t in range(family.L):
                db = store.db(table_name(t))
                if len(lost):
                    where, which = postings.find(txn, db, lost)
                    if len(which):
                        postings.remove(txn, db, where, which)
                if not len(rest):
                    continue
                missing = postings.remove(txn, db, H[:, t], rest)
                if missing:
                    raise CorruptIndexError(
                        f"{missing} ids were missing from table {t}; run `lshdb check`")
        k2i, i2k, tok = store.db(b"key2id"), store.db(b"id2key"), store.db(b"tokens")
        for p, b in zip(packed, pack_ids(ids)):
            txn.delete(p, db=k2i)
            txn.delete(b, db=i2k)
            txn.delete(b, db=tok)
        self._live -= len(ids)

    def _do_upsert(self, keys: list[Key], packed: list[bytes], X: np.ndarray,
                   extra: Any) -> None:
        existing = self._ids_of(packed)
        if existing:
            old = sorted(existing.items(), key=lambda kv: kv[1])
            self._remove_ids(np.array([i for _, i in old], dtype=np.int64), [p for p, _ in old])
        self._insert(packed, X, extra)

    def _do_delete(self, keys: list[Key], packed: list[bytes], missing_ok: bool) -> int:
        existing = self._ids_of(packed)
        if len(existing) < len(packed) and not missing_ok:
            first = next(k for k, p in zip(keys, packed) if p not in existing)
            raise KeyNotFoundError(
                f"{len(packed) - len(existing)} of {len(keys)} keys are not in the index "
                f"(first: {first!r}); nothing was deleted (pass missing_ok=True to skip them)")
        if existing:
            old = sorted(existing.items(), key=lambda kv: kv[1])
            self._remove_ids(np.array([i for _, i in old], dtype=np.int64), [p for p, _ in old])
        return len(existing)


def _as_list(keys: Iterable[Key]) -> list[Any]:
    if isinstance(keys, (str, bytes, int)):
        raise InvalidParameterError(
            "keys must be a sequence of keys (one per vector), not a single key; wrap it in a list")
    if isinstance(keys, np.ndarray):
        return keys.tolist()  # type: ignore[no-any-return]
    return list(keys)


def _check_unique(keys: Sequence[Key], packed: list[bytes]) -> None:
    if len(set(packed)) != len(packed):
        seen: set[bytes] = set()
        for k, p in zip(keys, packed):
            if p in seen:
                raise DuplicateKeyError(
                    f"key {k!r} appears more than once in the batch; keys must be unique")
            seen.add(p)


def _code_bytes(opts: dict[str, Any], codes_raw: Any) -> int:
    """Bytes per code of a generation: the caller's ``codes``, else those its calibration
    chose (the ``codes`` meta record); 0 without codes."""
    if opts.get("store") == "codes":
        return 0
    if opts.get("codes"):
        return int(opts["codes"]) // 8
    if codes_raw is not None and "codes" not in opts:
        return int(unpack_meta(bytes(codes_raw), "codes")["bits"]) // 8
    return 0


def _get_meta(txn: Any, db: Any, name: bytes) -> Any:
    raw = txn.get(name, db=db)
    if raw is None:
        raise CorruptIndexError(f"meta record {name.decode()!r} is missing; the index is damaged")
    return unpack_meta(raw, name.decode())


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
