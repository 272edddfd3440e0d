"""Compaction: rewrite the live items into a new generation and swap it in atomically.

While holding generation N's write lock (so no write is lost or doubled):

1. the live rows are copied, renumbered 0..live-1 and verified, into ``.tmp-gN+1/rows.bin``,
   which is fsynced;
2. a fresh LMDB environment beside it gets the meta records, both key maps and every
   table's postings, rebuilt in key order (bulk loads: no free pages, no slack); its
   commit is fsynced;
3. the folder is fsynced, renamed to ``gN+1`` and the parent folder fsynced;
4. CURRENT is replaced atomically (temporary file, fsync, rename, fsync);
5. generation N's state is marked ``retired_to: gN+1`` in the same write transaction that
   held the lock, which then commits; the old folder is removed.

A crash before step 4 leaves generation N live and complete (plus a leftover folder that
``check --fix`` removes); from step 4 on, generation N+1 is live and complete. Readers that
are open meanwhile keep answering from generation N and move to N+1 at their next snapshot;
writers waiting for the lock follow CURRENT when they get it. Removing a generation that
another process still maps is safe on POSIX: its open files live until they are closed.

``retune=True`` also re-chooses the build-time parameters the caller left out (k, w and the
default probes, min_hits and exact-scan choice) from the live rows, as the first
calibration did.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ReadOnlyError
from ..hashing.codes import CODES_NAME, SimHashCoder
from ..storage import layout, postings
from ..storage.codec import mark_format, pack_ids, pack_meta, unpack_id, unpack_meta
from ..storage.rows import ROWS_NAME, RowFile
from ..storage.store import Store, table_name, translated
from ..tuning import params
from .blas import for_rows, single_threaded

if TYPE_CHECKING:
    from .handle import Index

__all__ = ["compact", "RETUNE_SAMPLE"]

_BLOCK = 65536
RETUNE_SAMPLE = 1_000_000  # live rows, at most, that a retune calibrates on (drawn at random)


def _next_generation(path: str) -> str:
    numbers = [layout.gen_number(n) for n in layout.list_generations(path)]
    numbers += [layout.gen_number(n[len(layout.temp_name("")):])
                for n in os.listdir(path) if layout.is_temp(n)
                and n[len(layout.temp_name("")):].startswith("g")]
    return layout.gen_name(max(numbers, default=0) + 1)


def compact(index: Index, timeout: float | None = None, retune: bool = False,
            progress: Callable[[str, int, int], None] | None = None,
            on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
    """Compact ``index`` into a new generation; returns what was done (sizes, counts, time).

    ``on_wait()`` is called once before waiting for the write lock another writer holds.

    Raises
    ------
    ReadOnlyError
        The index was opened read-only.
    LockTimeoutError
        Another writer held the lock longer than ``timeout``.
    """
    if index.readonly:
        raise ReadOnlyError(f"{index.path} was opened read-only; open it with readonly=False")
    t0 = time.perf_counter()
    before = _disk_bytes(os.path.join(index.path, index.generation))
    with index.writer(timeout, on_wait) as w:
        old_gen = index.generation
        new_gen = _next_generation(index.path)
        tmp = os.path.join(index.path, layout.temp_name(new_gen))
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            with single_threaded():  # (its large steps take the threads back: for_rows)
                report = _write_generation(index, w, tmp, retune, progress)
            os.rename(tmp, os.path.join(index.path, new_gen))
            layout.fsync_dir(index.path)
            layout.write_current(index.path, new_gen)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        w.retire_to(new_gen)
    index.follow_generation()  # this handle moves to the new generation
    old_dir = os.path.join(index.path, old_gen)
    shutil.rmtree(old_dir, ignore_errors=True)
    after = _disk_bytes(os.path.join(index.path, new_gen))
    return {**report, "generation": new_gen, "retired": old_gen, "bytes_before": before,
            "bytes_after": after, "seconds": round(time.perf_counter() - t0, 3)}


def _disk_bytes(folder: str) -> int:
    total = 0
    for name in ("data.mdb", ROWS_NAME):
        try:
            total += os.stat(os.path.join(folder, name)).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def _write_generation(index: Index, w: Any, tmp: str, retune: bool,
                      progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    txn, store, rows = w.txn, w.store, w.rows
    n_rows = w.n_rows
    meta_db = store.db(b"meta")
    ids_l: list[int] = []
    keys: list[bytes] = []
    for k, v in txn.cursor(store.db(b"id2key")):
        ids_l.append(unpack_id(k))
        keys.append(v)
    ids = np.asarray(ids_l, dtype=np.int64)
    live = len(ids)
    metric = index.metric
    family = w.family
    settings = w.settings
    calibration = txn.get(b"calibration", db=meta_db)
    new_rows = RowFile(os.path.join(tmp, ROWS_NAME), metric.row_dim(), metric.row_dtype,
                       writable=True, create=True)
    try:
        for s in range(0, live, _BLOCK):
            new_rows.write(s, rows.read(ids[s : s + _BLOCK], n_rows))
            if progress:
                progress("rows", min(live, s + _BLOCK), live)
        new_rows.sync()
    finally:
        new_rows.close()
    layout.fsync_file(os.path.join(tmp, ROWS_NAME))
    codes_meta = txn.get(b"codes", db=meta_db)
    if retune and live >= params.CALIBRATE_MIN and not _fixed(index, family):
        sample = _sample_rows(rows, ids, n_rows)
        params.time_paths(metric, index.options, live, single_threaded)
        with for_rows(len(sample)):  # chosen for every live row, not only the sample's
            family, chosen, summary = params.choose_family(metric, index.options, sample,
                                                           rows=live)
        summary["live_rows"] = live
        settings = {**settings, "probes": chosen["probes"], "min_hits": chosen["min_hits"],
                    "scan": chosen["scan"]}
        if index.auto_codes():  # the codes follow the new choice too
            settings["rerank"] = chosen["rerank"]
            settings["rerank_for"] = chosen.get("rerank_for")
            codes_meta = _auto_codes(index, summary, codes_meta, rows, ids, n_rows, tmp)
        calibration = pack_meta(summary)
    codes = w.codes
    if codes is not None and codes_meta is not None and \
            not os.path.exists(os.path.join(tmp, CODES_NAME)):
        new_codes = RowFile(os.path.join(tmp, CODES_NAME), codes.dim, codes.dtype,
                            writable=True, create=True, checked=False)
        try:
            for s in range(0, live, _BLOCK):
                new_codes.write(s, codes.read(ids[s : s + _BLOCK], n_rows))
            new_codes.sync()
        finally:
            new_codes.close()
        layout.fsync_file(os.path.join(tmp, CODES_NAME))
    n_tables = family.L if family else index.n_tables
    size = max(1 << 26, 4 * _disk_bytes(os.path.join(index.path, index.generation)))
    new_store = Store(tmp, create=True, n_tables=n_tables, map_size=size)
    try:
        with translated(tmp), new_store.env.begin(write=True) as ntx:
            meta = new_store.db(b"meta")
            for name in (b"format", b"config"):
                ntx.put(name, txn.get(name, db=meta_db), db=meta)
            if codes_meta is not None and index.auto_codes():
                mark_format(ntx, meta, 3)  # codes the calibration chose
            ntx.put(b"settings", pack_meta(settings), db=meta)
            if calibration is not None:
                ntx.put(b"calibration", calibration, db=meta)
            if codes_meta is not None:
                ntx.put(b"codes", codes_meta, db=meta)
            ntx.put(b"state", pack_meta({"rows": live, "live": live}), db=meta)
            new_ids = np.arange(live, dtype=np.int64)
            if family is not None:
                ntx.put(b"family", pack_meta(family.params()), db=meta)
                H = np.empty((live, family.L), dtype=np.uint64)
                with for_rows(live):
                    for s in range(0, live, _BLOCK):
                        H[s : s + _BLOCK] = family.hash(rows.read(ids[s : s + _BLOCK], n_rows))
                for t in range(family.L):
                    postings.bulk_load(ntx.cursor(new_store.db(table_name(t))), H[:, t], new_ids)
                    if progress:
                        progress("tables", t + 1, family.L)
            id_bytes = pack_ids(new_ids)
            order = sorted(range(live), key=keys.__getitem__)
            ntx.cursor(new_store.db(b"key2id")).putmulti(
                [(keys[j], id_bytes[j]) for j in order], append=True)
            ntx.cursor(new_store.db(b"id2key")).putmulti(list(zip(id_bytes, keys)), append=True)
            old_tokens = store.db(b"tokens")
            if txn.stat(old_tokens)["entries"]:
                old_ids = pack_ids(ids)
                items = []
                for j in range(live):
                    raw = txn.get(old_ids[j], db=old_tokens)
                    if raw is not None:
                        items.append((id_bytes[j], raw))
                ntx.cursor(new_store.db(b"tokens")).putmulti(items, append=True)
        new_store.sync()
    finally:
        new_store.close()
    layout.fsync_file(os.path.join(tmp, "data.mdb"))
    layout.fsync_dir(tmp)
    return {"live": live, "rows_before": n_rows, "reclaimed_rows": n_rows - live,
            "retuned": bool(retune and family is not None and family is not index.family)}


def _auto_codes(index: Index, summary: dict[str, Any], codes_meta: bytes | None,
                rows: RowFile, ids: np.ndarray, n_rows: int, tmp: str) -> bytes | None:
    """The codes record of a retuned generation whose codes the calibration chooses: the
    old codes when their size is chosen again (copied by the caller), new ones encoded into
    ``tmp`` when another size is, none when no codes are."""
    bits = int(summary.get("codes") or 0)
    if not bits:
        return None
    if codes_meta is not None and unpack_meta(codes_meta, "codes")["bits"] == bits:
        return codes_meta
    live = rows.read(ids[: min(len(ids), _BLOCK)], n_rows)
    centre = index.metric.code_centre(live)
    coder = SimHashCoder(index.metric.dim, bits, index.options.get("seed", 0), centre)
    f = RowFile(os.path.join(tmp, CODES_NAME), bits // 8, np.dtype(np.uint8),
                writable=True, create=True, checked=False)
    try:
        for s in range(0, len(ids), _BLOCK):
            f.write(s, coder.encode(rows.read(ids[s : s + _BLOCK], n_rows)))
        f.sync()
    finally:
        f.close()
    layout.fsync_file(os.path.join(tmp, CODES_NAME))
    return pack_meta(coder.params())


def _fixed(index: Index, family: Any) -> bool:
    """True if the caller fixed every build-time parameter (nothing to retune)."""
    return params.family_if_complete(index.metric, index.options) is not None


def _sample_rows(rows: RowFile, ids: np.ndarray, n_rows: int,
                 limit: int = RETUNE_SAMPLE) -> np.ndarray:
    if len(ids) > limit:
        ids = np.sort(np.random.default_rng(0).choice(ids, limit, replace=False))
    return rows.read(ids, n_rows)
