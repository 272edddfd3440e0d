"""Opening one generation of an index: its meta records, hash family, store and files."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from ..errors import CorruptIndexError, FormatVersionError
from ..hashing.codes import CODES_NAME, SimHashCoder
from ..hashing.families import Family
from ..hashing.registry import family_from_params
from ..metrics import Metric, get_metric
from ..storage import store as store_mod
from ..storage.codec import unpack_meta
from ..storage.rows import ROWS_NAME, RowFile
from ..storage.store import Store, table_name
from ..tuning import params
from .format import READABLE_FORMATS, get_meta

__all__ = ["Generation", "load_generation"]


class Generation(NamedTuple):
    """What an index handle holds of one generation."""

    store: Store
    rows: RowFile
    codes: RowFile | None  # the hash-code file, if codes are kept beside the rows
    metric: Metric
    config: dict[str, Any]
    options: dict[str, Any]
    settings: dict[str, Any]
    family: Family | None  # None until the index has calibrated
    n_tables: int
    coder: SimHashCoder | None  # None until the first codes are written


def load_generation(path: str, gen: str, readonly: bool, map_size: int | None) -> Generation:
    """Open the generation ``gen`` of the index at ``path``: its store (acquired; the caller
    releases it), row file and code file, with the metric and family its meta records
    describe.

    Raises
    ------
    FormatVersionError
        A format version this lshdb does not read.
    CorruptIndexError
        Missing or malformed meta records, or a missing row file.
    """
    gen_dir = os.path.join(path, gen)
    store = store_mod.acquire(gen_dir, map_size=map_size)
    try:
        with store.read() as txn:
            meta = store.db(b"meta")
            fmt = get_meta(txn, meta, b"format")
            version = fmt.get("format_version") if isinstance(fmt, dict) else None
            if version not in READABLE_FORMATS or isinstance(version, bool):
                raise FormatVersionError(
                    f"{path} has format version {version!r}; this lshdb reads versions "
                    f"{', '.join(map(str, READABLE_FORMATS))}. Upgrade lshdb to open it.")
            config = get_meta(txn, meta, b"config")
            settings = get_meta(txn, meta, b"settings")
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
                           metric.row_dtype, writable=not readonly)
            code_bytes = _code_bytes(opts, codes_raw)
            codes = RowFile(os.path.join(gen_dir, CODES_NAME), code_bytes,
                            np.dtype(np.uint8), writable=not readonly, checked=False) \
                if code_bytes else None
        except FileNotFoundError as exc:
            raise CorruptIndexError(f"{gen_dir} lacks a row file ({exc.filename}); the "
                                    "index is damaged") from exc
    except (KeyError, TypeError) as exc:
        store_mod.release(store)
        raise CorruptIndexError(f"{path}: meta records are malformed ({exc})") from exc
    except BaseException:
        store_mod.release(store)
        raise
    coder = (SimHashCoder.from_params(metric.dim, unpack_meta(bytes(codes_raw), "codes"))
             if codes_raw is not None else None)
    return Generation(store, rows, codes, metric, config, opts, settings, family, n_tables,
                      coder)


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
