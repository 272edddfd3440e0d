"""Documents in (JSON lines, Parquet, globs) and results out, for dedup on Dask.

:func:`read_documents` makes a Dask DataFrame of ``key`` and ``text`` from JSON-lines files
(split into blocks of about ``blocksize`` bytes at line boundaries; a bad line is an
``InputFormatError`` naming the file and the line's byte offset) and Parquet files or
folders. :func:`write_dedup` runs :func:`lshdb.dask.dedup.dedup` and writes its pairs and
clusters: ``NAME.parquet`` is a folder of Parquet parts, ``NAME/`` (a trailing slash) a
folder of JSON-lines parts, any other name one JSON-lines file. The workers write the parts
into a temporary folder beside the target; only when the whole job has succeeded is it
renamed into place (a single file is assembled from the parts and renamed likewise), so a
failed or killed job leaves nothing that looks complete.

Thread safety: functions share no state.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from typing import Any

from ..errors import IndexExistsError, InputFormatError, InvalidParameterError, LshdbError
from ..io.jsonl import atomic_write
from .client import require

__all__ = ["DaskJobError", "read_documents", "write_results", "write_dedup", "target_kind"]

_JSONL_BLOCK = 64 << 20


class DaskJobError(LshdbError, RuntimeError):
    """The Dask job failed (a worker died too often, or lost its connection)."""


def _expand(inputs: list[str]) -> list[str]:
    files: list[str] = []
    for spec in inputs:
        found = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not found:
            raise InputFormatError(f"{spec}: no file matches")
        for f in found:
            if not os.path.exists(f):
                raise InputFormatError(f"{f}: no such file or folder")
        files.extend(found)
    return files


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq")) or os.path.isdir(path)


def _block_bytes(spec: tuple[str, int, int]) -> tuple[int, bytes]:
    """The lines that start in bytes [start, end) of a file, and the offset of the first."""
    path, start, end = spec
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # the line in progress belongs to the previous block
        first = f.tell()
        if first >= end:
            return first, b""
        data = f.read(end - first)
        if not data.endswith(b"\n"):
            data += f.readline()  # the line running past the block's end is this block's
    return first, data


def _jsonl_block(spec: tuple[str, int, int], key: str, text: str) -> Any:
    """The documents of the lines that start in bytes [start, end) of a JSON-lines file:
    parsed by pyarrow when it can, else line by line (which names the bad line)."""
    import pandas as pd

    first, data = _block_bytes(spec)
    try:
        import pyarrow as pa
        import pyarrow.json as pj

        # one thread: a worker is one core's share (pyarrow sizes its pool by the cores,
        # unless OMP_NUM_THREADS says otherwise, as Dask's nannies set it)
        table = pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(
            use_threads=False, block_size=1 << 24)) if data.strip() else None
        if table is not None and key in table.column_names and text in table.column_names \
                and pa.types.is_string(table.schema.field(text).type) \
                and (pa.types.is_string(table.schema.field(key).type)
                     or pa.types.is_integer(table.schema.field(key).type)) \
                and table.column(key).null_count == 0 and table.column(text).null_count == 0:
            return pd.DataFrame({key: pd.Series(table.column(key).to_pylist(), dtype=object),
                                 text: pd.Series(table.column(text).to_pylist(), dtype=object)})
    except (ImportError, ValueError, TypeError):  # pyarrow's errors derive from these
        pass
    return _parse_lines(spec[0], first, data, key, text)


def _parse_lines(path: str, start: int, data: bytes, key: str, text: str) -> Any:
    import pandas as pd

    keys: list[Any] = []
    texts: list[Any] = []
    at = start
    for raw in data.splitlines(keepends=True):
        here, at = at, at + len(raw)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFormatError(f"{path}: line at byte {here}: not valid UTF-8 JSON "
                                   f"({exc})") from None
        if not isinstance(obj, dict) or key not in obj or text not in obj:
            raise InputFormatError(f"{path}: line at byte {here}: needs the fields {key!r} "
                                   f"and {text!r}")
        if not isinstance(obj[text], str):
            raise InputFormatError(f"{path}: line at byte {here}: field {text!r} must be a "
                                   f"string; found {type(obj[text]).__name__}")
        keys.append(obj[key])
        texts.append(obj[text])
    return pd.DataFrame({key: pd.Series(keys, dtype=object),
                         text: pd.Series(texts, dtype=object)})


def read_documents(inputs: list[str], key: str = "id", text: str = "text",
                   blocksize: int = _JSONL_BLOCK) -> Any:
    """A Dask DataFrame of ``key`` and ``text`` from JSON-lines and Parquet files or globs.

    Raises
    ------
    InputFormatError
        A pattern that matches nothing or a missing file (at once); bad lines and missing
        columns when the frame is computed.
    """
    dask = require("dataframe")
    import dask.dataframe as dd
    import pandas as pd

    files = _expand(inputs)
    if not files:
        raise InputFormatError("no input files")
    frames = []
    meta = pd.DataFrame({key: pd.Series(dtype=object), text: pd.Series(dtype=object)})
    with dask.config.set({"dataframe.convert-string": False}):
        for f in files:  # in the order given: the documents' order decides pair order
            if _is_parquet(f):
                require("pyarrow")
                frames.append(dd.read_parquet(f, columns=[key, text]))
                continue
            size = os.path.getsize(f)
            blocks = [(f, s, min(size, s + blocksize)) for s in range(0, max(size, 1), blocksize)]
            frames.append(dd.from_map(_jsonl_block, blocks, key=key, text=text, meta=meta,
                                      enforce_metadata=False))
        return frames[0] if len(frames) == 1 else dd.concat(frames)


def target_kind(path: str) -> str:
    """``parquet`` (a folder of parts), ``parts`` (a folder of JSON-lines parts) or
    ``jsonl`` (one file), from the name."""
    if path.rstrip("/").endswith((".parquet", ".pq")):
        return "parquet"
    if path.endswith(("/", os.sep)):
        return "parts"
    return "jsonl"


def _write_part(frame: Any, folder: str, i: int, kind: str) -> int:
    """Write one partition as ``part-NNNNN`` in ``folder``, fsynced; returns its rows."""
    if kind == "parquet":
        path = os.path.join(folder, f"part-{i:05d}.parquet")
        frame.to_parquet(path, index=False)
    else:
        path = os.path.join(folder, f"part-{i:05d}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for row in frame.to_dict("records"):
                f.write(json.dumps(row, ensure_ascii=False, default=_plain) + "\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(frame)


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot serialise {type(v).__name__}")


def _prepare(path: str) -> tuple[str, str, str]:
    kind = target_kind(path)
    final = os.path.abspath(path.rstrip("/"))
    parent = os.path.dirname(final)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise InvalidParameterError(f"cannot write {path}: its folder does not exist or is "
                                    "not writable")
    if kind != "jsonl" and os.path.exists(final):
        raise IndexExistsError(f"{path} already exists; remove it or choose another name")
    tmp = os.path.join(parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    return kind, final, tmp


def _finish(kind: str, final: str, tmp: str) -> None:
    if kind == "jsonl":
        with atomic_write(final, "wb") as out:
            for name in sorted(os.listdir(tmp)):
                with open(os.path.join(tmp, name), "rb") as f:
                    shutil.copyfileobj(f, out)
        shutil.rmtree(tmp)
        return
    os.rename(tmp, final)
    fd = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(targets: list[tuple[str | None, list[Any]]], *extra: Any
                  ) -> tuple[list[Any], list[int | None]]:
    """Compute ``extra`` and write each target's partitions (delayed pandas frames) in one
    graph; a target is put in place only when everything has succeeded.

    Returns the computed ``extra`` and the rows written per target (None: no path).

    Raises
    ------
    DaskJobError
        The job failed on the cluster; nothing is left at the targets.
    """
    dask = require("distributed")
    from distributed import KilledWorker

    staged: list[tuple[str, str, str]] = []
    writes: list[list[Any]] = []
    try:
        for path, parts in targets:
            if path is None:
                continue
            kind, final, tmp = _prepare(path)
            staged.append((kind, final, tmp))
            fmt = "parquet" if kind == "parquet" else "jsonl"
            writes.append([dask.delayed(_write_part, pure=False)(part, tmp, i, fmt)
                           for i, part in enumerate(parts)])
        try:
            values = dask.compute(*extra, *writes)
        except KilledWorker as exc:
            raise DaskJobError(f"the Dask job failed: workers died running {exc.task!r} "
                               "more often than distributed.scheduler.allowed-failures "
                               "allows; nothing was written") from None
        for kind, final, tmp in staged:
            _finish(kind, final, tmp)
    finally:
        for _, _, tmp in staged:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = iter(values[len(extra):])
    return list(values[:len(extra)]), [None if p is None else int(sum(next(counts)))
                                       for p, _ in targets]


def write_dedup(frame: Any, pairs: str | None = None, clusters: str | None = None,
                **options: Any) -> dict[str, Any]:
    """Deduplicate ``frame`` on the current Dask client and write the results.

    ``options`` go to :func:`lshdb.dask.dedup.dedup`; ``pairs`` and ``clusters`` are
    targets as described in the module docstring. Returns the statistics (with
    ``pairs_written`` and ``clusters_written``).

    Raises
    ------
    DaskJobError
        The job failed on the cluster (e.g. a worker was killed repeatedly); nothing is
        left at the targets.
    IndexExistsError
        A folder target that exists already.
    """
    from .dedup import dedup

    result = dedup(frame, **options)
    (stats,), (n_pairs, n_clusters) = write_results(
        [(pairs, result.pair_parts), (clusters, result.cluster_parts)], result.stats)
    return {**stats, "pairs_written": n_pairs, "clusters_written": n_clusters}
