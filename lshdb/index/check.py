"""Deep integrity check: postings <-> key maps <-> rows <-> counters <-> directory.

``check(path)`` verifies, within one read snapshot:

* CURRENT names a whole generation; no temporary folders or retired generations are left;
* the format version, config, family and state records decode;
* ``rows.bin`` has its header, holds every committed row, and every row passes its checksum;
* ``key2id`` and ``id2key`` are mutual inverses, hold only ids below the committed count,
  and have as many entries as the live counter says;
* every chunk of every table is well formed (sorted ids, suffix rules), every run waiting
  to be merged (:mod:`lshdb.storage.runs`) passes its checksum and is in key order, the state
  counts the runs stored, and every live id is in every table (chunks and runs together)
  exactly once, in the bucket recomputed from its stored row.

``fix=True`` repairs what is safe: stale temporary folders and retired generations no process
uses are removed, and stale LMDB reader slots of dead processes are cleared.

``drop_damaged=True`` (with ``fix=True``) also removes the items whose rows fail their
checksum: their keys, their postings (found by reading every table, since a damaged row
cannot give its buckets) and their token hashes, in one write transaction; the report's
``dropped`` lists their keys so that they can be added again. A compaction then rewrites
the live rows, leaving the damaged bytes behind, so that the check that follows passes.

LMDB does not checksum its pages: a damaged B-tree page can send it past the end of
``data.mdb``, and the process dies of SIGBUS (or LMDB aborts) instead of raising.
``isolate=True`` (what ``lshdb check`` uses) runs the check in a child process, so that such
a death becomes a reported problem instead of the checker's own.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, LshdbError
from ..storage import layout, postings, runs
from ..storage.codec import pack_id, unpack_id, unpack_key
from ..storage.store import table_name
from ..tuning import params

__all__ = ["check"]

_MAX_REPORTED = 20
_RUN_CHECK = re.compile(r"(run|try) `lshdb check` and |[;,:]? *(run|try) `lshdb check`$")


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.fixed: list[str] = []
        self.dropped = 0

    def problem(self, msg: str) -> None:
        # errors raised while checking may advise running the check: it is running
        msg = _RUN_CHECK.sub("", msg)
        if msg in self.problems:  # found again by a later stage (a damaged row re-read)
            return
        if len(self.problems) < _MAX_REPORTED:
            self.problems.append(msg)
        else:
            self.dropped += 1


def check(path: str, open_index: Callable[[str], Any], fix: bool = False,
          progress: Callable[[str, int, int], None] | None = None,
          isolate: bool = False, drop_damaged: bool = False,
          open_writable: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Check the index at ``path``; returns ``{"ok", "problems", "fixed", "counts"}``
    (and ``"dropped"``, the keys removed, with ``drop_damaged=True``).

    ``open_index(path)`` opens a read-only handle (the index module passes its ``Index``, so
    that this module needs no import of it). ``progress(phase, done, total)`` is called as
    rows and tables are checked. With ``isolate=True`` the check runs in a child process
    (started afresh, about half a second more), and a child killed by a signal, or failing,
    is reported as a problem. ``drop_damaged=True`` (needs ``fix=True``, and
    ``open_writable(path)``, which opens a writable handle) first removes the items whose
    rows fail their checksum (see the module docstring).
    """
    if drop_damaged and not fix:
        raise InvalidParameterError("drop_damaged removes items from the index; pass "
                                    "fix=True with it")
    if drop_damaged and open_writable is None:
        raise InvalidParameterError("drop_damaged needs open_writable, an opener of a "
                                    "writable handle")
    if isolate:
        return _isolated(os.fspath(path), open_index, fix, progress, drop_damaged,
                         open_writable)
    rep = _Report()
    path = os.fspath(path)
    _check_directory(path, rep, fix)
    counts: dict[str, Any] = {}
    dropped: list[Any] | None = None
    if drop_damaged:
        try:
            dropped = _drop_damaged(path, open_writable, rep,  # type: ignore[arg-type]
                                    progress)
        except LshdbError as exc:
            rep.problem(f"cannot drop the damaged rows: {exc}")
            dropped = []
    try:
        index = open_index(path)
    except LshdbError as exc:
        if str(exc) not in rep.problems:  # (the folder's check found it already)
            rep.problem(f"cannot open the index: {exc}")
        return _result(rep, counts)
    try:
        if fix:
            cleared = index.clear_stale_readers()
            if cleared:
                rep.fixed.append(f"cleared {cleared} stale reader slot(s)")
        with index.reader() as r:
            _check_snapshot(index, r, rep, counts, progress)
    except LshdbError as exc:
        rep.problem(str(exc))
    finally:
        index.close()
    result = _result(rep, counts)
    if dropped is not None:
        result["dropped"] = dropped
    return result


def _drop_damaged(path: str, open_writable: Callable[[str], Any], rep: _Report,
                  progress: Callable[[str, int, int], None] | None) -> list[Any]:
    """Delete the items whose rows fail their checksum, then compact if any committed row
    fails (a deleted row's bytes stay in the file until a compaction); their keys."""
    with open_writable(path) as index:
        with index.writer() as w:
            n_rows, rows = w.n_rows, w.rows
            bad: list[np.ndarray] = []
            for s in range(0, n_rows, 65536):
                block = np.arange(s, min(n_rows, s + 65536))
                bad.append(block[rows.damaged(block, n_rows)])
                if progress:
                    progress("damaged rows", int(block[-1]) + 1, n_rows)
            damaged = np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
            i2k = w.store.db(b"id2key")
            packed = [w.txn.get(pack_id(int(i)), db=i2k) for i in damaged]
            keys = [unpack_key(p) for p in packed if p is not None]
            if keys:
                w.delete(keys)
        if keys:
            rep.fixed.append(f"dropped {len(keys)} item(s) whose rows fail their checksum; "
                             "add them again")
        if len(damaged):
            index.compact(progress=progress)
            rep.fixed.append(f"compacted away {len(damaged)} damaged row(s)")
    return keys


def _child(path: str, open_index: Callable[[str], Any], fix: bool, conn: Any,
           drop_damaged: bool = False, open_writable: Callable[[str], Any] | None = None
           ) -> None:
    """Entry point of the isolated check: progress messages, then the report."""
    report = check(path, open_index, fix,
                   lambda phase, done, total: conn.send(("progress", phase, done, total)),
                   drop_damaged=drop_damaged, open_writable=open_writable)
    conn.send(("report", report))
    conn.close()


def _isolated(path: str, open_index: Callable[[str], Any], fix: bool,
              progress: Callable[[str, int, int], None] | None, drop_damaged: bool = False,
              open_writable: Callable[[str], Any] | None = None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")  # nothing of this process's LMDB state
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child,
                        args=(path, open_index, fix, send, drop_damaged, open_writable),
                        name="lshdb-check")
    child.start()
    send.close()  # the child holds the only sending end: EOF when it exits
    report: dict[str, Any] | None = None
    try:
        while report is None:
            try:
                msg = recv.recv()
            except EOFError:
                break
            if msg[0] == "progress":
                if progress:
                    progress(*msg[1:])
            else:
                report = msg[1]
    finally:
        child.join()
        recv.close()
    if report is not None:
        return report
    code = child.exitcode or 0
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = (f"the check died of {name} while reading the index: LMDB read a damaged page "
               "(data.mdb is corrupt; LMDB does not checksum its pages); restore the index "
               "from a backup")
    else:
        why = f"the check process failed (exit status {code}); see its error output above"
    rep = _Report()
    rep.problem(why)
    return _result(rep, {})


def _result(rep: _Report, counts: dict[str, Any]) -> dict[str, Any]:
    problems = list(rep.problems)
    if rep.dropped:
        problems.append(f"... and {rep.dropped} more problems")
    return {"ok": not problems, "problems": problems, "fixed": rep.fixed, "counts": counts}


def _check_directory(path: str, rep: _Report, fix: bool) -> None:
    try:
        current = layout.read_current(path)
    except LshdbError as exc:
        rep.problem(str(exc))
        return
    gen_dir = os.path.join(path, current)
    for part in ("data.mdb", "rows.bin"):
        if not os.path.isfile(os.path.join(gen_dir, part)):
            rep.problem(f"generation {current} lacks {part}")
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name == layout.CURRENT + ".tmp":
            if fix:
                os.unlink(full)
                rep.fixed.append(f"removed {name}")
            else:
                rep.problem(f"leftover {name} from an interrupted CURRENT update")
            continue
        if not (layout.is_temp(name) or (_is_gen(name) and name != current)):
            continue
        if fix and _unused(full):
            shutil.rmtree(full, ignore_errors=True)
            rep.fixed.append(f"removed {name}")
        else:
            rep.problem(f"leftover folder {name} (a temporary or retired generation); "
                        "`lshdb check --fix` removes it once no process uses it")


def _is_gen(name: str) -> bool:
    try:
        layout.gen_number(name)
        return True
    except LshdbError:
        return False


def _unused(folder: str) -> bool:
    """True unless a live process holds an LMDB reader slot in this folder."""
    lock = os.path.join(folder, "lock.mdb")
    if not os.path.exists(lock):
        return True
    try:
        import lmdb

        env = lmdb.open(folder, readonly=True, lock=True, max_dbs=2)
        try:
            env.reader_check()
            readers = env.readers()
        finally:
            env.close()
    except Exception:  # a half-written folder: nothing can be using it
        return True
    return "(no active readers)" in readers


def _check_snapshot(index: Any, r: Any, rep: _Report, counts: dict[str, Any],
                    progress: Callable[[str, int, int], None] | None) -> None:
    store, txn = r.store, r.txn
    n_rows, live = r.n_rows, r.live
    counts.update(rows=n_rows, live=live)
    rows = r.rows
    if rows.file_rows() < n_rows:
        rep.problem(f"rows.bin holds {rows.file_rows()} rows; {n_rows} are committed (truncated)")
        return
    # every committed row passes its checksum
    step = 65536
    for s in range(0, n_rows, step):
        try:
            rows.read_range(s, min(n_rows, s + step), n_rows)
        except LshdbError as exc:
            rep.problem(str(exc))
            break
        if progress:
            progress("rows", min(n_rows, s + step), n_rows)
    # key maps
    id_of_key: dict[bytes, int] = {}
    for k, v in txn.cursor(store.db(b"key2id")):
        try:
            unpack_key(k)
            id_of_key[k] = unpack_id(v)
        except LshdbError as exc:
            rep.problem(f"key2id: {exc}")
    live_ids: list[int] = []
    for k, v in txn.cursor(store.db(b"id2key")):
        try:
            i = unpack_id(k)
        except LshdbError as exc:
            rep.problem(f"id2key: {exc}")
            continue
        live_ids.append(i)
        if i >= n_rows:
            rep.problem(f"id2key holds id {i} beyond the {n_rows} committed rows")
        if id_of_key.get(v) != i:
            rep.problem(f"id2key maps id {i} to a key that key2id maps to {id_of_key.get(v)}")
    if len(id_of_key) != len(live_ids):
        rep.problem(f"key2id has {len(id_of_key)} entries but id2key has {len(live_ids)}")
    if len(live_ids) != live:
        rep.problem(f"the live counter says {live} but id2key holds {len(live_ids)} ids")
    counts["keys"] = len(live_ids)
    if index.options.get("store_tokens"):
        with_tokens = set()
        for k, v in txn.cursor(store.db(b"tokens")):
            with_tokens.add(unpack_id(k))
            if len(v) % 8 or not len(v):
                rep.problem(f"the token hashes of id {unpack_id(k)} are malformed")
        if with_tokens != set(live_ids):
            rep.problem(f"{len(set(live_ids) - with_tokens)} live ids lack token hashes and "
                        f"{len(with_tokens - set(live_ids))} dead ids keep them")
    fam = r.family
    if fam is None:  # before calibration the rows are scanned, not hashed
        if len(live_ids) >= params.CALIBRATE_MIN:
            rep.problem(f"the index holds {len(live_ids)} items but no hash family")
        return
    ids = np.asarray(sorted(i for i in live_ids if i < n_rows), dtype=np.int64)
    _check_codes(index, ids, n_rows, rep)
    expected = np.empty((len(ids), fam.L), dtype=np.uint64)
    for s in range(0, len(ids), step):
        try:
            expected[s : s + step] = fam.hash(rows.read(ids[s : s + step], n_rows))
        except LshdbError as exc:
            rep.problem(str(exc))
            return
    waiting = _check_runs(txn, store, r, fam.L, rep)
    counts["runs"] = len(waiting)
    for t in range(fam.L):
        _check_table(txn, store.db(table_name(t)), t, ids, expected[:, t], n_rows, rep,
                     [run.table(t) for run in waiting])
        if progress:
            progress("tables", t + 1, fam.L)
    counts["tables"] = fam.L


def _check_codes(index: Any, ids: np.ndarray, n_rows: int, rep: _Report) -> None:
    """Every live item's hash code passes its checksum and equals the code of its row."""
    codes, coder = index.files().codes, index.coder
    if codes is None:
        return
    if coder is None:
        if len(ids):
            rep.problem("the index keeps hash codes but has no codes record")
        return
    if codes.file_rows() < n_rows:
        rep.problem(f"codes.bin holds {codes.file_rows()} rows; {n_rows} are committed (truncated)")
        return
    for s in range(0, len(ids), 65536):
        block = ids[s : s + 65536]
        try:
            stored = codes.read(block, n_rows)
            expect = coder.encode(index.files().rows.read(block, n_rows))
        except LshdbError as exc:
            rep.problem(str(exc))
            return
        wrong = np.flatnonzero((stored != expect).any(axis=1))
        if len(wrong):
            rep.problem(f"{len(wrong)} hash codes differ from their rows' codes "
                        f"(first: id {int(block[wrong[0]])})")
            return


def _check_runs(txn: Any, store: Any, r: Any, L: int, rep: _Report) -> list[runs.Run]:
    """The waiting runs, decoded and verified (checksum, order, tables, count); their ids
    are checked with each table's (:func:`_check_table`)."""
    try:
        waiting = [run for _, run in runs.list_runs(txn, store.db(b"meta"))]
    except LshdbError as exc:
        rep.problem(str(exc))
        return []
    stated = int(r.state.get("runs", 0))
    if len(waiting) != stated:
        rep.problem(f"the state counts {stated} runs but {len(waiting)} are stored")
    for run in waiting:
        if len(run) and int(run.tables.max()) >= L:
            rep.problem(f"a run holds table {int(run.tables.max())} of an index of {L} tables")
    return waiting


def _check_table(txn: Any, db: Any, t: int, ids: np.ndarray, expected: np.ndarray,
                 n_rows: int, rep: _Report,
                 waiting: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """One table's chunks, and its share of the waiting runs, against the live ids and
    their recomputed buckets."""
    got_ids: list[np.ndarray] = [i.astype(np.int64) for _, i in waiting or []]
    got_buckets: list[np.ndarray] = [b.astype(np.uint64) for b, _ in waiting or []]
    prev_bucket, prev_last = b"", -1
    try:
        for bucket, suffix, arr in postings.iter_table(txn, db):
            if len(arr) == 0:
                rep.problem(f"table {t}: an empty chunk in bucket {bucket.hex()}")
                continue
            if (np.diff(arr.astype(np.int64)) <= 0).any():
                rep.problem(f"table {t}: chunk {bucket.hex()}/{suffix.hex()} is not sorted")
            if bucket != prev_bucket:
                prev_bucket, prev_last = bucket, -1
            if int(arr[0]) <= prev_last:
                rep.problem(f"table {t}: chunks of bucket {bucket.hex()} overlap or are out of order")
            if suffix != postings.TAIL and int(arr[0]) < int.from_bytes(suffix, "big"):
                rep.problem(f"table {t}: chunk {bucket.hex()}/{suffix.hex()} holds an id below its key")
            prev_last = int(arr[-1])
            got_ids.append(arr.astype(np.int64))
            got_buckets.append(np.full(len(arr), int.from_bytes(bucket, "big"), dtype=np.uint64))
    except LshdbError as exc:
        rep.problem(f"table {t}: {exc}")
        return
    gi = np.concatenate(got_ids) if got_ids else np.empty(0, dtype=np.int64)
    gb = np.concatenate(got_buckets) if got_buckets else np.empty(0, dtype=np.uint64)
    order = np.argsort(gi, kind="stable")
    gi, gb = gi[order], gb[order]
    if len(gi) and gi[-1] >= n_rows:
        rep.problem(f"table {t}: posting id {int(gi[-1])} beyond the {n_rows} committed rows")
    dup = gi[1:][gi[1:] == gi[:-1]]
    if len(dup):
        rep.problem(f"table {t}: id {int(dup[0])} appears more than once ({len(dup)} repeats)")
    extra = np.setdiff1d(gi, ids)
    if len(extra):
        rep.problem(f"table {t}: {len(extra)} posted ids are not live (first: {int(extra[0])})")
    missing = np.setdiff1d(ids, gi)
    if len(missing):
        rep.problem(f"table {t}: {len(missing)} live ids are missing (first: {int(missing[0])})")
    if not len(dup) and not len(extra) and not len(missing):
        wrong = np.flatnonzero(gb != expected)
        if len(wrong):
            rep.problem(f"table {t}: {len(wrong)} ids are in the wrong bucket "
                        f"(first: id {int(gi[wrong[0]])})")
