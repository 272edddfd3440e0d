"""Commands that write: create, add, build, delete."""

from __future__ import annotations

import shutil
import time
from typing import Any

import click

from .. import open as open_index  # recognises a sharded folder too
from ..index.index import create
from ..io.inputs import VectorSource, read_keys
from ..io.items import open_items
from ..io.load import Loader
from ..metrics import metric_class
from ..storage.streams import STDIO
from .base import (
    CONTEXT,
    check_shingle,
    create_options,
    emit,
    fmt_option,
    given,
    index_summary,
    nice_option,
    one_stdin,
    resolve_key_field,
    timeout_option,
    waiting_notice,
    with_inputs,
)
from .progress import PhaseBars


@click.command("create", context_settings=CONTEXT)
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--metric", required=True, type=click.Choice(["cosine", "l2", "l1", "hamming", "jaccard"]))
@click.option("--dim", type=int, help="Vector dimension (hamming: bits; not for jaccard).")
@create_options
@fmt_option
def create_cmd(path: str, metric: str, dim: int | None, fmt: str, **kw: Any) -> None:
    """Create an empty index at PATH."""
    takes_dim = metric_class(metric).takes_dim
    if dim is None and takes_dim:
        raise click.UsageError("Missing option '--dim'.")
    if dim is not None and not takes_dim:
        raise click.UsageError("--dim does not apply to jaccard; give --num-perm instead.")
    with create(path, metric=metric, dim=dim, **given(**kw)) as index:
        emit([index_summary(index)], fmt)


@click.command("add", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@with_inputs
@click.option("--upsert", is_flag=True, help="Replace the vectors of keys that exist.")
@click.option("--skip-existing", is_flag=True,
              help="Leave keys the index holds as they are and add the others (resumes an "
                   "interrupted add without rewriting what it committed).")
@click.option("--shingle", help="jaccard: must match the index's shingles (a check).")
@timeout_option
@nice_option
@fmt_option
def add_cmd(path: str, input_path: str, keys_file: str | None, key_field: str | None,
            vector_field: str, batch_size: int | None, text_field: str | None,
            tokens_field: str | None, upsert: bool, skip_existing: bool, shingle: str | None,
            timeout: float | None, fmt: str) -> None:
    """Add vectors (or, to a jaccard index, documents) from a file to the index at PATH.

    With --batch-size, each batch is committed on its own: after a failure or Ctrl-C the
    command says how many rows were committed, and --skip-existing adds the rest."""
    one_stdin(("--input", input_path), ("--keys", keys_file))
    if upsert and skip_existing:
        raise click.UsageError("--upsert replaces existing keys, --skip-existing keeps them: "
                               "give one")
    with open_index(path) as index:
        check_shingle(index, shingle)
        src = open_items(index.metric.name, input_path, resolve_key_field(input_path, key_field),
                     vector_field, text_field, tokens_field)
        t0 = time.perf_counter()
        mode = "upsert" if upsert else "skip" if skip_existing else "add"
        counts = _load(index, src, keys_file, mode, batch_size, timeout)
        dt = time.perf_counter() - t0
        shown = {"added": counts["added"]}
        if upsert:
            shown["replaced"] = counts["replaced"]
        if skip_existing:
            shown["skipped"] = counts["skipped"]
        emit([{**shown, "seconds": round(dt, 3), "vectors_per_s": round(len(src) / dt),
               "items": len(index)}], fmt)


@click.command("build", context_settings=CONTEXT)
@click.argument("path", type=click.Path(file_okay=False))
@with_inputs
@click.option("--metric", required=True, type=click.Choice(["cosine", "l2", "l1", "hamming", "jaccard"]))
@create_options
@timeout_option
@click.option("--shards", type=click.IntRange(1, 4096),
              help="Build S shard indexes under PATH (vectors), queried as one index.")
@click.option("--dask", "scheduler", metavar="SCHEDULER",
              help="With --shards: build the shards on Dask, local:N or a scheduler address.")
@fmt_option
def build_cmd(path: str, input_path: str, keys_file: str | None, key_field: str | None,
              vector_field: str, batch_size: int | None, text_field: str | None,
              tokens_field: str | None, metric: str, timeout: float | None,
              shards: int | None, scheduler: str | None, fmt: str, **kw: Any) -> None:
    """Create an index at PATH and bulk-load a file into it.

    A build that fails or is interrupted removes the index it created. With --shards, PATH
    holds S ordinary indexes with one family and a manifest; `lshdb query`, `stats` and
    `check` read it as one index."""
    one_stdin(("--input", input_path), ("--keys", keys_file))
    key_field = resolve_key_field(input_path, key_field)
    cls = metric_class(metric)
    if shards is not None or scheduler is not None:
        if shards is None:
            raise click.UsageError("--dask builds shards; give --shards S")
        if cls.is_set or text_field or tokens_field:
            raise click.UsageError("--shards builds vector indexes (not jaccard)")
        if STDIO in (input_path, keys_file):
            raise click.UsageError("--shards reads --input (and --keys) once per shard; give "
                                   "files, not standard input")
        _build_sharded(path, input_path, keys_file, key_field, vector_field, metric, shards,
                       scheduler, fmt, given(**kw))
        return
    src = open_items(metric, input_path, key_field, vector_field, text_field, tokens_field)
    dim = cls.input_dim(src.dim) if isinstance(src, VectorSource) else None
    t0 = time.perf_counter()
    index = create(path, metric=metric, dim=dim, **given(**kw))
    try:
        with index:
            n = _load(index, src, keys_file, "add", batch_size, timeout,
                      resumable=False)["added"]
            summary = index_summary(index)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # nothing half-built is left behind
        raise
    dt = time.perf_counter() - t0
    emit([{**summary, "added": n, "seconds": round(dt, 3), "vectors_per_s": round(n / dt)}],
         fmt)


def _load(index: Any, src: Any, keys_file: str | None, mode: str, batch: int | None,
          timeout: float | None, resumable: bool = True) -> dict[str, int]:
    """Load ``src`` in transactions of ``batch`` rows; after a failure or Ctrl-C, say how
    many rows were committed (``resumable``: and how to add the rest)."""
    keys = read_keys(keys_file) if keys_file else None
    bars = PhaseBars()
    loader = Loader(index, mode, batch, timeout, waiting_notice(index.path, timeout), bars)
    try:
        return loader.run(src, keys)
    except BaseException as exc:
        bars.close()
        if loader.committed and resumable:
            what = "the interruption" if isinstance(exc, (KeyboardInterrupt, click.Abort)) \
                else "the error"
            click.echo(f"{loader.committed} of {len(src)} rows were committed before {what} "
                       f"(the input's first {loader.committed}); add the rest with "
                       "--skip-existing", err=True)
        raise
    finally:
        bars.close()


def _build_sharded(path: str, input_path: str, keys_file: str | None, key_field: str,
                   vector_field: str, metric: str, shards: int, scheduler: str | None,
                   fmt: str, options: dict[str, Any]) -> None:
    from ..dask.shards import build_sharded

    if scheduler is None:
        summary = build_sharded(path, input_path, metric, shards, None, keys_file, key_field,
                                vector_field, **options)
    else:
        from ..dask.client import connect

        with connect(scheduler) as client:
            summary = build_sharded(path, input_path, metric, shards, client, keys_file,
                                    key_field, vector_field, **options)
    emit([summary], fmt)


@click.command("delete", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--keys", "keys_file", required=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="One key per line (-: standard input).")
@click.option("--missing-ok", is_flag=True, help="Skip keys that are not in the index.")
@timeout_option
@nice_option
@fmt_option
def delete_cmd(path: str, keys_file: str, missing_ok: bool, timeout: float | None,
               fmt: str) -> None:
    """Delete the keys listed in a file (one transaction)."""
    keys = read_keys(keys_file)
    with open_index(path) as index:
        with index.writer(timeout, waiting_notice(index.path, timeout)) as w:
            n = w.delete(keys, missing_ok=missing_ok)
        emit([{"deleted": n, "items": len(index)}], fmt)
