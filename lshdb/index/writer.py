"""The write transaction of an index: :class:`Writer`, one LMDB write transaction a block.

Inside ``with index.writer() as w`` every add, upsert and delete goes into one LMDB write
transaction (committed on a clean exit, discarded on an exception); the rows go to the row
file first, then the postings, the key maps and the state. On ``MapFullError`` the block is
replayed on a larger map.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from ..errors import (
    CorruptIndexError,
    IndexClosedError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    LshdbError,
)
from ..hashing.codes import CODES_NAME, SimHashCoder
from ..hashing.families import Family
from ..storage import store as store_mod
from ..storage.codec import MAX_ROWS, Key, mark_format, pack_ids, pack_keys, pack_meta, unpack_meta
from ..storage.rows import RowFile
from ..tuning import params
from .blas import for_rows, single_threaded
from .format import get_meta
from .keys import as_key_list, check_unique
from .plan import managed
from .posting import Posting

if TYPE_CHECKING:
    from ..storage.store import Store
    from .handle import Index

__all__ = ["Writer"]


class Writer(Posting):
    """The single writer of an index; use as ``with index.writer() as w``.

    Not thread-safe: use it from the thread that entered the block (py-lmdb's rule for
    write transactions).

    Besides ``add``, ``upsert`` and ``delete``, an open block offers lshdb's maintenance
    code (compaction, the deep check) a small internal interface, described in
    ``docs/internals.md``: :attr:`txn`, :attr:`store`, :attr:`rows`, :attr:`codes`,
    :attr:`n_rows`, :attr:`family`, :attr:`settings`, :meth:`put_meta`, :meth:`retire_to`
    and :meth:`abandon`.
    """

    def __init__(self, index: Index, timeout: float | None,
                 on_wait: Callable[[], None] | None = None) -> None:
        self._index = index
        self._timeout = timeout
        self._on_wait = on_wait
        self._txn: Any = None
        self._log: list[tuple[str, tuple[Any, ...]]] = []
        self._retired_to: str | None = None

    # -- transaction -----------------------------------------------------------------
    def __enter__(self) -> Writer:
        index = self._index
        index.write_lock.acquire(self._timeout, self._on_wait)
        try:
            index.follow_generation()
            with store_mod.translated(index.path):
                self._begin()
        except BaseException:
            index.write_lock.release()
            raise
        index.attach_writer(self)
        return self

    # -- the internal interface (docs/internals.md) ------------------------------------
    @property
    def txn(self) -> Any:
        """The open LMDB write transaction (valid inside the block only)."""
        if self._txn is None:
            raise LshdbError("the writer is not active; use it inside `with index.writer()`")
        return self._txn

    @property
    def store(self) -> Store:
        """The :class:`~lshdb.storage.store.Store` of the generation being written."""
        return self._store

    @property
    def rows(self) -> RowFile:
        """The row file of the generation being written."""
        return self._rows

    @property
    def codes(self) -> RowFile | None:
        """The hash-code file, if the index keeps codes beside its rows."""
        return self._codes

    @property
    def n_rows(self) -> int:
        """Rows written so far: the committed ones and this block's."""
        return self._n_rows

    @property
    def family(self) -> Family | None:
        """The hash family (None until the index has calibrated)."""
        return self._family

    @property
    def settings(self) -> dict[str, Any]:
        """A copy of the query defaults as this block will commit them."""
        return dict(self._settings)

    def put_meta(self, name: bytes, value: Any) -> None:
        """Write the ``meta`` record ``name`` in this block's transaction."""
        self.txn.put(name, pack_meta(value), db=self._store.db(b"meta"))

    def retire_to(self, generation: str) -> None:
        """Mark this generation retired in favour of ``generation`` when the block commits
        (readers that still open it move to the new one)."""
        self._retired_to = generation

    def abandon(self) -> bool:
        """Roll this open block back and release the lock (the index is being closed);
        False if another thread holds it."""
        index = self._index
        if self._txn is None or not index.write_lock.held_here():
            return self._txn is None
        try:
            self._txn.abort()
            self._drop_new_codes()
        finally:
            self._txn = None
            index.attach_writer(None)
            index.write_lock.release()
        return True

    def _begin(self) -> None:
        index = self._index
        self._new_codes: RowFile | None = None
        self._chosen_codes = 0
        self._changed = self._retune = False  # rows added or deleted; calibration stale
        index.pick_up_codes()  # codes started by another process's calibration
        files = index.files()
        self._store, self._rows, self._codes = files.store, files.rows, files.codes
        self._family = index.family
        self._coder = index.coder
        self._settings = dict(index.settings)
        self._txn = self._store.begin_write()
        state = get_meta(self._txn, self._store.db(b"meta"), b"state")
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
            with store_mod.translated(self._store.gen_dir):
                self._commit()
        finally:
            self._txn = None
            index.attach_writer(None)
            index.write_lock.release()

    def _commit(self) -> None:
        index = self._index
        while True:
            try:
                if self._wrote_rows:
                    self._rows.sync()  # rows before postings
                    if self._codes is not None:
                        self._codes.sync()
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
        :func:`params.stale_calibration`); never for parameters the caller fixed, nor for
        a plan managed from outside (:mod:`lshdb.index.plan`)."""
        raw = self._txn.get(b"calibration", db=meta)
        if raw is None or params.family_if_complete(self._index.metric,
                                                    self._index.options) is not None:
            return False
        cal = unpack_meta(raw, "calibration")
        if managed(cal):  # a shard: the sharded index's build chose for all the shards
            return False
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
        # OpenBLAS on one thread for this operation only (lshdb.index.blas)
        with single_threaded(), store_mod.translated(self._store.gen_dir, map_full=True):
            while True:
                try:
                    result = getattr(self, "_do_" + op)(*args)
                    self._log.append((op, args))
                    return result
                except lmdb.MapFullError:
                    self._regrow()

    # -- public operations -----------------------------------------------------------
    def add(self, keys: Iterable[Key], vectors: Any, skip_existing: bool = False) -> int:
        """Add new items; returns how many were added.

        ``skip_existing=True`` leaves the keys the index holds already as they are (their
        vectors are neither checked against the stored ones nor rewritten) and adds the
        others: an interrupted load resumes this way.

        Raises
        ------
        InvalidVectorError, DimensionMismatchError
            Bad vectors (nothing is written).
        DuplicateKeyError
            A key appears twice in the batch.
        KeyExistsError
            A key is already in the index (use :meth:`upsert` to replace it).
        """
        kept = None
        if skip_existing:
            keys, vectors, kept = self._new_only(keys, vectors)
            if not keys:
                return 0
        try:
            prepared = self._prepare(keys, vectors)
        except InvalidVectorError as exc:  # name the row as the caller counts it
            if kept is None or exc.row is None:
                raise
            raise exc.renumbered(kept[exc.row]) from None
        self._run("add", *prepared)
        return len(prepared[0])

    def _new_only(self, keys: Iterable[Key], vectors: Any
                  ) -> tuple[list[Key], Any, list[int] | None]:
        """The keys (and their vectors) that the index does not hold yet, and their rows in
        the batch (None: all of them)."""
        if self._txn is None:
            raise LshdbError("the writer is not active; use it inside `with index.writer()`")
        raw = as_key_list(keys)
        if isinstance(vectors, (str, bytes)) or not hasattr(vectors, "__len__"):
            vectors = list(vectors)
        if len(raw) != len(vectors):
            raise InvalidParameterError(
                f"{len(raw)} keys for {len(vectors)} vectors; pass one key per row")
        packed = pack_keys(raw)[1]
        with store_mod.translated(self._store.gen_dir):
            existing = self._ids_of(packed)
        if not existing:
            return raw, vectors, None
        keep = [i for i, p in enumerate(packed) if p not in existing]
        if isinstance(vectors, np.ndarray):
            return [raw[i] for i in keep], vectors[keep], keep
        return [raw[i] for i in keep], [vectors[i] for i in keep], keep

    def upsert(self, keys: Iterable[Key], vectors: Any) -> int:
        """Add items, replacing the vectors of keys that already exist; returns how many
        were replaced (the others were added)."""
        replaced: int = self._run("upsert", *self._prepare(keys, vectors))
        return replaced

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        """Delete items; returns how many were deleted.

        Raises
        ------
        KeyNotFoundError
            A key is not in the index (unless ``missing_ok``); nothing is deleted.
        """
        keys_n, packed = pack_keys(as_key_list(keys))
        check_unique(keys_n, packed)
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
        raw_keys = as_key_list(keys)
        if len(raw_keys) != len(X):
            raise InvalidParameterError(
                f"{len(raw_keys)} keys for {len(X)} vectors; pass one key per row")
        keys_n, packed = pack_keys(raw_keys)
        check_unique(keys_n, packed)
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
        coder = SimHashCoder(index.metric.dim, bits, index.options.get("seed", 0),
                             index.metric.code_centre(live))
        for s in range(0, first, 65536):
            stop = min(first, s + 65536)
            f.write(s, coder.encode(self._rows.read(np.arange(s, stop), first)))
        f.write(first, coder.encode(X))
        self._txn.put(b"codes", pack_meta(coder.params()), db=self._store.db(b"meta"))
        mark_format(self._txn, self._store.db(b"meta"), 3)
        self._coder = coder
        self._new_codes = self._codes = f
        index.set_codes(f)
        self._wrote_rows = True

    def _drop_new_codes(self) -> None:
        """Forget codes begun by this block, which did not commit."""
        f, self._new_codes = self._new_codes, None
        if f is not None:
            self._codes = None
            self._index.set_codes(None)
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
        codes_file = self._codes
        if codes_file is not None:
            if self._coder is None:  # fixed with the first batch (its mean is the l2 centre)
                centre = self._index.metric.code_centre(X)
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
                if self._chosen_codes and self._codes is None:
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

    def _do_upsert(self, keys: list[Key], packed: list[bytes], X: np.ndarray,
                   extra: Any) -> int:
        existing = self._ids_of(packed)
        if existing:
            old = sorted(existing.items(), key=lambda kv: kv[1])
            self._remove_ids(np.array([i for _, i in old], dtype=np.int64), [p for p, _ in old])
        self._insert(packed, X, extra)
        return len(existing)

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
