"""The posting side of a write: new ids into a run or the tables, removed ids out of both.

:class:`Posting` is the part of :class:`~lshdb.index.writer.Writer` that keeps the hash
tables and the runs (small batches waiting to be merged, :mod:`lshdb.storage.runs`) in
step with the rows a write block adds and removes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptIndexError
from ..storage import postings, runs
from ..storage.codec import mark_format, pack_ids
from ..storage.store import table_name

if TYPE_CHECKING:
    from ..hashing.families import Family
    from ..storage.rows import RowFile
    from ..storage.store import Store

__all__ = ["Posting"]


class Posting:
    """Posting methods of a write block (mixed into :class:`Writer`, which sets the
    attributes below)."""

    _txn: Any
    _store: Store
    _rows: RowFile
    _family: Family | None
    _n_rows: int
    _live: int
    _runs: int
    _run_seq: int
    _changed: bool  # rows added or deleted in this block

    def _post(self, L: int, H: np.ndarray, ids: np.ndarray) -> None:
        """Post ``ids`` (hashes ``H``, one column per table): a small batch into a new
        run, anything else (and the runs waiting) into the tables (:mod:`lshdb.storage.runs`)."""
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
