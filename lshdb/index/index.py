"""The public facade: ``create``, ``open`` and ``check``; the :class:`Index` they return.

Workflow::

    index = lshdb.create("vectors.lshdb", metric="cosine", dim=384)
    with index.writer() as w:        # one LMDB write transaction
        w.add(keys, vectors)
    index.query(q, k=10)             # [(key, distance), ...] best first, exact distances

The handle is :class:`~lshdb.index.handle.Index`, its write transaction
:class:`~lshdb.index.writer.Writer`, its read snapshot :class:`~lshdb.index.reader.Reader`.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import numpy as np

from ..errors import IndexExistsError, InvalidParameterError
from ..hashing.codes import CODES_NAME
from ..hashing.registry import family_from_params
from ..metrics import get_metric
from ..storage import layout
from ..storage import store as store_mod
from ..storage.codec import pack_meta
from ..storage.rows import ROWS_NAME, RowFile
from ..storage.store import Store
from ..tuning import params
from .format import FORMAT_VERSION
from .handle import Index, check
from .plan import write_plan
from .writer import Writer

__all__ = ["create", "open", "check", "Index", "Writer", "FORMAT_VERSION"]


def create(path: str | os.PathLike[str], metric: str, dim: int | None = None, *,
           plan: dict[str, Any] | None = None, **options: Any) -> Index:
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
    plan : dict, optional
        A calibration chosen elsewhere (:func:`lshdb.index.plan.choose_plan`, with the same
        metric, dim and options): the index starts with it and never retunes on its own.
        The shards of a sharded build share one this way.

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
    opts = m.stored_options(opts)  # e.g. jaccard's defaults filled in
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
        if plan is not None:
            fam = family_from_params(m.hash_dim(), plan["family"])
        n_tables = opts.get("L") or (fam.L if fam else params.default_L(m.name, opts))
        code_bytes = opts["codes"] // 8 if opts.get("codes") and opts.get("store") != "codes" \
            else 0
        store = Store(os.path.join(tmp, gen), create=True, n_tables=n_tables,
                      map_size=opts.get("map_size"))
        try:
            config = {"metric": m.name, "dim": m.dim, "options": opts, "created": time.time()}
            with store_mod.translated(tmp), store.env.begin(write=True) as txn:
                meta = store.db(b"meta")
                txn.put(b"format", pack_meta({"format_version": _format_of(fam, opts)}),
                        db=meta)
                txn.put(b"config", pack_meta(config), db=meta)
                txn.put(b"settings", pack_meta(params.query_settings(opts)), db=meta)
                txn.put(b"state", pack_meta({"rows": 0, "live": 0}), db=meta)
                if fam is not None:
                    txn.put(b"family", pack_meta(fam.params()), db=meta)
                if plan is not None:
                    code_bytes = write_plan(txn, meta, plan) or code_bytes
            store.sync()
        finally:
            store.close()
        RowFile(os.path.join(tmp, gen, ROWS_NAME), m.row_dim(), m.row_dtype,
                writable=True, create=True).close()
        if code_bytes:
            RowFile(os.path.join(tmp, gen, CODES_NAME), code_bytes, np.dtype(np.uint8),
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


def _format_of(fam: Any, opts: dict[str, Any]) -> int:
    """The oldest format that describes a new index (see :mod:`lshdb.index.format`)."""
    if fam is not None and fam.params().get("keys", 1) != 1:
        return 4
    return 3 if opts.get("dtype") == "float16" else 2


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
