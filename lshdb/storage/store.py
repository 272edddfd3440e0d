"""The LMDB environment of one generation: named databases, transactions, map growth.

lmdb errors are translated here, once, into :mod:`lshdb.errors`. Map growth follows py-lmdb's
rules: ``set_mapsize`` may only run while this process has no transaction open, so every
transaction passes through a shared/exclusive gate; a resize (ours after ``MapFullError``, or
another process's, seen as ``MapResizedError``) takes the gate exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from typing import Any

import lmdb

from ..errors import (
    CorruptIndexError,
    LshdbError,
    NotAnIndexError,
    ReadOnlyError,
    StorageError,
)
from .lmdbfile import missing_pages_are_free
from .locks import try_lock
from .runs import RunCache

__all__ = ["Store", "Gate", "ReadTxn", "INITIAL_MAP_SIZE", "acquire", "release",
           "translate", "translated"]

INITIAL_MAP_SIZE = 1 << 30
MAX_DBS = 1100
_FIXED_DBS = (b"meta", b"key2id", b"id2key", b"tokens")


class Gate:
    """A shared/exclusive lock: transactions share it, a map resize holds it alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())  # (never taken re-entrantly)
        self._shared = 0
        self._exclusive = False
        self._mine = threading.local()  # snapshots the current thread holds

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self.enter_shared()
        try:
            yield
        finally:
            self.exit_shared()

    def enter_shared(self) -> None:
        """:meth:`shared` without ``with`` (a read snapshot's fast path)."""
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        self._mine.depth = getattr(self._mine, "depth", 0) + 1

    def exit_shared(self) -> None:
        self._mine.depth -= 1
        with self._cond:
            self._shared -= 1
            if self._shared == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if getattr(self._mine, "depth", 0):
            raise LshdbError(
                "this thread holds a read snapshot of the index (a `with index.reader()` "
                "block) while an operation needs the environment to itself (a first write "
                "in this process or a map resize); finish the snapshot first or write from "
                "another thread")
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


_registry: dict[str, Store] = {}
_registry_lock = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's environments so they can be reopened.

    The child must never use them (LMDB's rule). Closing the child's copy only unmaps it
    and closes the child's descriptors: the parent's locks and reader slots are untouched
    (POSIX record locks belong to the process that set them; LMDB only clears reader slots
    of the closing process's own pid). py-lmdb refuses to open a path it thinks is open, so
    the copy has to be closed before the child can open its own.
    """
    for store in list(_registry.values()):
        try:
            store.env.close()
        except lmdb.Error:
            pass
    _registry.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def acquire(gen_dir: str, create: bool = False, n_tables: int = 0,
            map_size: int | None = None) -> Store:
    """The process's shared Store of ``gen_dir`` (LMDB allows one open per process)."""
    key = os.path.realpath(gen_dir)
    with _registry_lock:
        store = _registry.get(key)
        if store is None:
            store = Store(gen_dir, create=create, n_tables=n_tables, map_size=map_size)
            _registry[key] = store
        store.refs += 1
        return store


def release(store: Store) -> None:
    with _registry_lock:
        store.refs -= 1
        if store.refs > 0:
            return
        key = os.path.realpath(store.gen_dir)
        if _registry.get(key) is store:
            del _registry[key]
    store.close()


class Store:
    """One generation's LMDB environment and its named databases, shared in a process.

    Thread-safety: read transactions may run in any thread; the write transaction stays in
    the thread that began it (py-lmdb's rule). A forked child opens its own Store.
    Durability: commits fsync the data pages; a full-durability writer then calls
    :meth:`sync` to fsync the meta page as well (LMDB's default order, made per-commit).
    """

    def __init__(self, gen_dir: str, create: bool = False, n_tables: int = 0,
                 map_size: int | None = None) -> None:
        try:
            self._init(gen_dir, create, n_tables, map_size)
        except FileNotFoundError as exc:  # the generation was removed while we opened it
            raise NotAnIndexError(f"{gen_dir} vanished while opening it ({exc})") from exc

    def _init(self, gen_dir: str, create: bool, n_tables: int, map_size: int | None) -> None:
        self.gen_dir = gen_dir
        self.refs = 0
        self.gate = Gate()
        self.runs_cache = RunCache()  # decoded runs of this generation (lshdb.runs)
        self.pid = os.getpid()
        self._data = os.path.join(gen_dir, "data.mdb")
        if not create and not os.path.isfile(self._data):
            raise NotAnIndexError(f"{gen_dir} holds no data.mdb; is this an lshdb index?")
        if map_size is None:
            size = os.path.getsize(self._data) if os.path.exists(self._data) else 0
            map_size = max(INITIAL_MAP_SIZE, 2 * size)
        # py-lmdb opens named databases with a write transaction on a writable environment,
        # which would wait for a writer in another process. So the environment is opened
        # writable only while the index's write lock can be had at once (no writer active:
        # the transaction cannot wait); otherwise read-only, and upgraded by the first
        # writer of this process, which holds the lock.
        self.dbs: dict[bytes, Any] = {}
        names = list(_FIXED_DBS)
        if create:
            names += [table_name(t) for t in range(n_tables)]
        lock_fd = -1 if create else try_lock(os.path.join(os.path.dirname(gen_dir), "writer.lock"))
        try:
            self.readonly = not create and (lock_fd < 0 or not os.access(gen_dir, os.W_OK))
            self._open_env(map_size, create)
            if not create:
                self._check_size(self._data)
                names += [n for n in self._named() if n not in names]
            self.open_dbs(names, create=create)
        finally:
            if lock_fd >= 0:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
                os.close(lock_fd)

    def _open_env(self, map_size: int, create: bool) -> None:
        data = self._data
        lock = True
        try:
            for attempt in range(8):
                try:
                    self.env = lmdb.open(
                        self.gen_dir, map_size=map_size, subdir=True, readonly=self.readonly,
                        create=create, max_dbs=MAX_DBS, max_readers=1022, readahead=False,
                        sync=True, metasync=False, lock=lock)
                    break
                except lmdb.MapResizedError:  # another process grew the map meanwhile
                    if attempt == 7:
                        raise
                    map_size = max(2 * map_size, 2 * os.path.getsize(data))
                except lmdb.ReadonlyError:
                    # files this process may not write (another user's, a folder without
                    # write permission; LMDB copes with read-only media by itself): the
                    # lock file cannot be opened, so a reader reads without it, once
                    lock_file = os.path.join(self.gen_dir, "lock.mdb")
                    may_write = os.access(self.gen_dir, os.W_OK) and os.access(lock_file, os.W_OK)
                    if not self.readonly or not lock or may_write:
                        raise
                    lock = False
        except lmdb.InvalidError as exc:
            raise CorruptIndexError(f"{data} is not a valid LMDB file: {exc}") from exc
        except lmdb.VersionMismatchError as exc:
            raise CorruptIndexError(f"{data} was written by another LMDB version: {exc}") from exc
        except lmdb.CorruptedError as exc:
            raise CorruptIndexError(f"{data} is corrupted: {exc}") from exc
        except lmdb.ReadonlyError as exc:
            raise LshdbError(f"cannot open {data} for writing: {exc}") from exc
        except (lmdb.Error, FileNotFoundError) as exc:
            if not os.path.isfile(data):  # removed meanwhile (a compaction elsewhere)
                raise NotAnIndexError(f"{self.gen_dir} vanished while opening it") from exc
            raise LshdbError(f"cannot open {data}: {exc}") from exc

    def ensure_writable(self) -> None:
        """Reopen the environment writable (the caller holds the index's write lock)."""
        if not self.readonly:
            return
        with self.gate.exclusive():
            if not self.readonly:
                return
            names = list(self.dbs)
            size = self.env.info()["map_size"]
            self.env.close()
            self.readonly = False
            self._open_env(size, create=False)
            self.dbs = {}
            with self.env.begin(write=True) as txn:
                for name in names:
                    self.dbs[name] = self.env.open_db(name, txn=txn, create=False)

    def _named(self) -> list[bytes]:
        """Names of the named databases (the main database holds nothing else)."""
        for attempt in range(8):
            try:
                with self.env.begin() as txn:
                    return [bytes(k) for k in txn.cursor().iternext(values=False)]
            except lmdb.MapResizedError:  # another process grew the map
                if attempt == 7:
                    raise LshdbError(
                        f"the map of {self.gen_dir} kept changing size; retry") from None
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise translate(exc, self.gen_dir) from exc
        return []

    def _pages_end(self) -> int:
        """Where LMDB's last allocated page ends, in bytes."""
        return int((self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"])

    def cover_pages(self) -> None:
        """Extend data.mdb to the end of LMDB's last allocated page (the caller holds the
        write lock, after a commit).

        LMDB does not write a page that its transaction allocated and freed again before
        committing; when such pages are the newest, the file ends before the last page
        the meta page counts. They are free and never read; the hole is filled with zeros
        (sparse) so that the next open need not prove that from LMDB's free list
        (:meth:`_check_size`).
        """
        end = self._pages_end()
        if os.path.getsize(self._data) < end:
            os.truncate(self._data, end)

    def _check_size(self, data: str) -> None:
        """A data.mdb shorter than a page in use would fault (SIGBUS) when read.

        Commits keep the file over LMDB's last page (:meth:`cover_pages`), but a writer
        killed between an LMDB commit and that extension, or an open in that moment, finds
        a file that ends early. It is whole when every missing page is free, which
        :func:`lshdb.lmdbfile.missing_pages_are_free` reads from LMDB's free list (with a
        snapshot held, so no writer reuses those pages meanwhile); a writable open then
        covers them. Anything else is a truncation."""
        for _ in range(3):
            need, have = self._pages_end(), os.path.getsize(data)
            if have >= need:
                return
            try:
                with self.env.begin() as txn:
                    txnid = txn.id()
                    if missing_pages_are_free(data, txnid):
                        if not self.readonly:  # this open holds the write lock
                            self.cover_pages()
                        return
            except lmdb.MapResizedError:  # another process grew the map: look again
                self.env.set_mapsize(0)
                continue
            if self.env.info()["last_txnid"] == txnid:
                break  # no commit meanwhile: the answer stands
        self.env.close()
        raise CorruptIndexError(
            f"{data} holds {have} bytes but its pages reach {need} and some missing page "
            "is in use: the file was truncated; restore the index from a backup")

    # -- databases -------------------------------------------------------------------
    def open_dbs(self, names: list[bytes], create: bool = False) -> None:
        try:
            if create:
                with self.env.begin(write=True) as txn:
                    for name in names:
                        self.dbs[name] = self.env.open_db(name, txn=txn, create=True)
            else:
                todo = [n for n in names if n not in self.dbs]
                for attempt in range(5):
                    try:
                        if self.readonly:  # py-lmdb opens them in a read transaction
                            for name in todo:
                                self.dbs[name] = self.env.open_db(name, create=False)
                        else:  # callers hold the write lock: a write transaction is free
                            with self.env.begin(write=True) as txn:
                                for name in todo:
                                    self.dbs[name] = self.env.open_db(name, txn=txn,
                                                                      create=False)
                        break
                    except lmdb.MapResizedError:  # another process grew the map
                        if attempt == 4:
                            raise
                        self.adopt_map_size()
        except lmdb.NotFoundError as exc:
            raise CorruptIndexError(
                f"{self.gen_dir} lacks a named database ({exc}); the index is damaged") from exc
        except lmdb.Error as exc:
            raise CorruptIndexError(f"cannot open the databases of {self.gen_dir}: {exc}") from exc

    def db(self, name: bytes) -> Any:
        return self.dbs[name]

    # -- transactions ----------------------------------------------------------------
    def read(self) -> ReadTxn:
        """A read snapshot, ``with store.read() as txn``; adopts a map another process grew,
        then retries."""
        return ReadTxn(self)

    def begin_write(self) -> lmdb.Transaction:
        """Begin the (single) write transaction; the caller holds the WriterLock."""
        self.ensure_writable()
        while True:
            try:
                return self.env.begin(write=True, buffers=False)
            except lmdb.MapResizedError:
                self.adopt_map_size()
            except lmdb.Error as exc:
                raise translate(exc, self.gen_dir) from exc

    def adopt_map_size(self) -> None:
        with self.gate.exclusive():
            self.env.set_mapsize(0)

    def grow(self) -> None:
        """Double the map (no transaction of this process may be open)."""
        with self.gate.exclusive():
            self.env.set_mapsize(2 * self.env.info()["map_size"])

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def reader_slots(self, clear_stale: bool = False) -> dict[str, int]:
        """LMDB's reader table: ``max`` slots, ``used`` (held by a process, with or without
        a snapshot open), ``active`` (a snapshot open now) and ``cleared`` (with
        ``clear_stale``: slots of dead processes freed first, LMDB's ``reader_check``)."""
        try:
            cleared = int(self.env.reader_check()) if clear_stale else 0
            table = self.env.readers().splitlines()[1:]  # after the header line
        except lmdb.Error as exc:
            raise translate(exc, self.gen_dir) from exc
        slots = [line.split() for line in table if len(line.split()) == 3]
        return {"max": int(self.env.max_readers()), "used": len(slots),
                "active": sum(1 for s in slots if s[2] != "-"), "cleared": cleared}

    def sync(self) -> None:
        """After a commit: :meth:`cover_pages`, then fsync data and meta pages."""
        if not self.readonly:
            self.cover_pages()
            self.env.sync(True)

    def close(self) -> None:
        with self.gate.exclusive():
            self.env.close()


class ReadTxn:
    """The context of :meth:`Store.read`: a read transaction inside the shared gate (a
    class, not a generator: one is opened per one-shot query). lmdb errors raised in the
    block leave it as :mod:`lshdb.errors` exceptions."""

    __slots__ = ("store", "txn")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.txn: Any = None

    def __enter__(self) -> Any:
        store = self.store
        gate = store.gate
        for _ in range(5):
            gate.enter_shared()
            try:
                self.txn = store.env.begin(buffers=False)
                return self.txn
            except lmdb.MapResizedError:
                gate.exit_shared()
            except lmdb.Error as exc:
                gate.exit_shared()
                raise translate(exc, store.gen_dir) from exc
            except BaseException:
                gate.exit_shared()
                raise
            store.adopt_map_size()
        raise LshdbError(f"the map of {store.gen_dir} kept changing size; retry")

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        txn, self.txn = self.txn, None
        try:
            if txn is not None:
                txn.abort()
        finally:
            self.store.gate.exit_shared()
        if isinstance(exc, lmdb.Error):
            raise translate(exc, self.store.gen_dir) from exc


def table_name(t: int) -> bytes:
    return b"t%03d" % t


def translate(exc: lmdb.Error, where: str) -> LshdbError:
    """The :mod:`lshdb.errors` exception for an lmdb error (raise it ``from exc``)."""
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                        lmdb.BadTxnError)):
        return CorruptIndexError(f"LMDB reports damage in {where}: {exc}; run `lshdb check`")
    if isinstance(exc, lmdb.ReadonlyError):
        return ReadOnlyError(f"LMDB cannot write {where}: {exc}")
    if isinstance(exc, lmdb.ReadersFullError):
        return StorageError(f"LMDB's reader table of {where} is full ({exc}): too many open "
                            "snapshots; close unused handles and readers")
    if isinstance(exc, lmdb.MapResizedError):
        return LshdbError(f"the map of {where} kept changing size ({exc}); retry")
    if isinstance(exc, lmdb.MapFullError):
        return StorageError(f"the LMDB map of {where} is full ({exc})")
    # lmdb reports a failed write or read (EIO, ENOSPC, EFBIG, ...) as a plain lmdb.Error
    return StorageError(f"LMDB could not read or write {where}: {exc} (a full disk, a file "
                        "size limit or a failing disk?); the transaction was not committed")


@contextlib.contextmanager
def translated(where: str, map_full: bool = False) -> Iterator[None]:
    """Raise the lmdb errors of the block as :mod:`lshdb.errors` exceptions, ``from`` the
    original; ``map_full=True`` lets ``lmdb.MapFullError`` through (a writer that grows
    the map and replays catches it)."""
    try:
        yield
    except lmdb.MapFullError as exc:
        if map_full:
            raise
        raise translate(exc, where) from exc
    except lmdb.Error as exc:
        raise translate(exc, where) from exc
