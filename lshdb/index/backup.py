"""A consistent copy of an index while readers and a writer keep working: ``backup``.

Within one read snapshot of the live generation:

1. LMDB copies its environment as of that snapshot (``Environment.copy(compact=True,
   txn=...)``, LMDB's own hot copy: free pages left out) into a temporary folder;
2. the row count recorded in the copied ``state`` is read back from the copy;
3. ``rows.bin`` (and ``codes.bin``) are copied up to that count: rows below a committed
   count never change, and those rows were fsynced before the commit that counted them,
   so the copy holds exactly what the snapshot refers to. Bytes past the count (a writer's
   uncommitted rows) are left out.

The copy gets a CURRENT naming its generation, every file and folder is fsynced, and the
temporary folder is renamed to the destination: a crash leaves no half backup under that
name. The snapshot pins the generation's files, so a compaction that retires the
generation meanwhile does not disturb the copy. The result is an ordinary index.

Thread safety: uses its own read snapshot; any number of backups may run at once.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb

from ..errors import CorruptIndexError, IndexExistsError
from ..hashing.codes import CODES_NAME
from ..storage import layout
from ..storage.codec import unpack_meta
from ..storage.rows import ROWS_NAME

if TYPE_CHECKING:
    from .handle import Index

__all__ = ["backup"]


def backup(index: Index, dest: str | os.PathLike[str],
           progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Copy the live generation of ``index`` to a new index at ``dest``.

    Returns what was copied: ``{"path", "generation", "rows", "live", "bytes",
    "seconds"}``.

    Raises
    ------
    IndexExistsError
        ``dest`` exists (a backup never replaces anything).
    """
    dest = os.fspath(dest)
    if os.path.lexists(dest):
        raise IndexExistsError(f"{dest} already exists; a backup is written to a new path "
                               "(remove the old backup first, or choose another path)")
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.backup-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        with index.reader() as r:
            store = r.store
            gen = os.path.basename(store.gen_dir)
            gdir = os.path.join(tmp, gen)
            os.makedirs(gdir)
            if progress:
                progress("copy lmdb", 0, 1)
            store.env.copy(gdir, compact=True, txn=r.txn)
            if progress:
                progress("copy lmdb", 1, 1)
            n_rows = _copied_rows(gdir)
            if n_rows != r.n_rows:
                raise CorruptIndexError(f"the copy of {store.gen_dir} counts {n_rows} rows "
                                        f"where its snapshot counts {r.n_rows}")
            files = [(r.rows, ROWS_NAME)]
            if r.codes is not None:
                files.append((r.codes.file, CODES_NAME))
            for rows, name in files:
                rows.copy_to(os.path.join(gdir, name), n_rows,
                             functools.partial(progress, name) if progress else None)
            live = r.live
        layout.fsync_file(os.path.join(gdir, "data.mdb"))
        layout.fsync_dir(gdir)
        layout.write_current(tmp, gen)  # (fsyncs the folder)
        if os.path.lexists(dest):
            raise IndexExistsError(f"{dest} appeared while the backup was written; the "
                                   "backup was not kept")
        os.rename(tmp, dest)
        layout.fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(os.stat(os.path.join(dest, gen, f)).st_size for f in os.listdir(
        os.path.join(dest, gen)))
    return {"path": dest, "generation": gen, "rows": n_rows, "live": live, "bytes": size,
            "seconds": round(time.perf_counter() - t0, 3)}


def _copied_rows(gen_dir: str) -> int:
    """The committed row count recorded in the copied environment."""
    env = lmdb.open(gen_dir, readonly=True, lock=False, max_dbs=4, subdir=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            raw = txn.get(b"state", db=meta)
    finally:
        env.close()
    if raw is None:
        raise CorruptIndexError(f"the copy in {gen_dir} has no state record")
    return int(unpack_meta(bytes(raw), "state")["rows"])
