"""The ``lshdb`` command line: parse, call the library, print.

Output is JSON lines by default (one object per line, for scripts) and an aligned table with
``--format table`` (for people). Every error is printed as ``Error: ...`` on stderr with exit
status 1. Long work shows a progress bar on stderr when it is a terminal, else a line every
few seconds (:mod:`lshdb.cli.progress`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from typing import Any

import click
import numpy as np

from .. import __version__
from .. import open as open_index  # recognises a sharded folder too
from ..demo import DEMO_MIN_ROWS
from ..errors import (
    InputFormatError,
    KeyNotFoundError,
    LockTimeoutError,
    LshdbError,
    TuningError,
)
from ..index.index import Index, create
from ..index.index import check as deep_check
from ..io.inputs import open_vectors, read_keys
from ..metrics import metric_class
from ..storage.streams import STDIO, is_stream
from .loading import load, say_waiting, write_block
from .progress import PhaseBars, progress
from .words import cli_words, tidy

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """A click group whose every error is ``Error: ...`` with exit status 1."""

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **kw: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **kw)
        try:
            rv = super().main(args, prog_name, complete_var, False, **kw)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except (LshdbError, OSError) as exc:
            click.echo(f"Error: {cli_words(str(exc))}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fmt_option(f: Any) -> Any:
    return click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
                        show_default=True, help="JSON lines for scripts, a table for people.")(f)


def emit(records: Iterable[dict[str, Any]], fmt: str, table: bool = False) -> None:
    """Print records as JSON lines or as one aligned table (``table=True``: even a single
    wide record, which otherwise reads better as ``field: value`` lines)."""
    if fmt == "json":
        for r in records:
            click.echo(json.dumps(tidy(r), default=_json_default))
        return
    rows = [{k: _cell(v) for k, v in r.items()} for r in records]
    if not rows:
        return
    if len(rows) == 1 and len(rows[0]) > 6 and not table:
        field_width = max(len(k) for k in rows[0])
        for k, v in rows[0].items():
            click.echo(f"{k.ljust(field_width)}  {v}")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    width = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(width[c]) for c in cols).rstrip())
    for r in rows:
        click.echo("  ".join(r.get(c, "").ljust(width[c]) for c in cols).rstrip())


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=_json_default)
    return str(v)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot serialise {type(v).__name__}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# -- the group -------------------------------------------------------------------------


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="lshdb")
def cli() -> None:
    """lshdb: a persistent locality-sensitive-hashing index.

    Build an index offline, then serve nearest-neighbour queries from many processes.
    Start with `lshdb demo`.
    """


def _create_options(f: Any) -> Any:
    opts = [
        click.option("--tables", "L", type=int, help="Number of hash tables L (OR)."),
        click.option("--bits", "k", type=int, help="Hash functions per table k (AND)."),
        click.option("--width", "w", type=float, help="p-stable bucket width w (l2, l1)."),
        click.option("--family", type=click.Choice(["hyperplane", "crosspolytope", "pstable",
                                                    "unary", "bitsample"]),
                     help="Hash family (default: the metric's)."),
        click.option("--codes", type=int,
                     help="cosine or l2: bits of a SimHash code per item (a multiple of 64, "
                          "up to 4096) that ranks candidates before the exact re-rank."),
        click.option("--dtype", type=click.Choice(["float32", "float16"]),
                     help="cosine, l2, l1: precision of the stored rows (default float32; "
                          "float16 halves them, distances stay float32)."),
        click.option("--max-value", type=int, help="Largest value for --family unary."),
        click.option("--probes", type=int, help="Buckets probed per query (default stored)."),
        click.option("--seed", type=int,
                     help="Seed of the random projections (jaccard: of the MinHash "
                          "permutations; default 0, and 1 with --mode classic, as datasketch)."),
        click.option("--durability", type=click.Choice(["full", "fast"]),
                     help="full: fsync every commit (default); fast: no fsync of the meta page (see docs/guarantees.md)."),
        click.option("--target-recall", type=float,
                     help="Recall@10 the calibration aims for (default 0.9)."),
        click.option("--num-perm", type=int, help="jaccard: MinHash values per item (128)."),
        click.option("--threshold", "threshold", type=float,
                     help="jaccard: similarity the bands are tuned for (0.5)."),
        click.option("--shingle", help="jaccard: shingles of documents, word:N or char:N."),
        click.option("--mode", type=click.Choice(["oph", "classic"]),
                     help="jaccard: fast signatures (oph) or datasketch-compatible (classic)."),
        click.option("--store-tokens", is_flag=True, default=None,
                     help="jaccard: keep token hashes for exact Jaccard scores."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@cli.command("create", context_settings=CONTEXT)
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--metric", required=True, type=click.Choice(["cosine", "l2", "l1", "hamming", "jaccard"]))
@click.option("--dim", type=int, help="Vector dimension (hamming: bits; not for jaccard).")
@_create_options
@_fmt_option
def create_cmd(path: str, metric: str, dim: int | None, fmt: str, **kw: Any) -> None:
    """Create an empty index at PATH."""
    takes_dim = metric_class(metric).takes_dim
    if dim is None and takes_dim:
        raise click.UsageError("Missing option '--dim'.")
    if dim is not None and not takes_dim:
        raise click.UsageError("--dim does not apply to jaccard; give --num-perm instead.")
    with create(path, metric=metric, dim=dim, **_options(**kw)) as index:
        emit([_summary(index)], fmt)


def _summary(index: Index) -> dict[str, Any]:
    from ..metrics.sets import describe_sets

    fam = index.family.describe() if index.family else None
    return {"path": index.path, "metric": index.metric.name, **describe_sets(index.metric),
            "family": fam, "items": len(index)}


class _ItemSource:
    """Documents or token sets from JSON lines, shaped like a VectorSource."""

    def __init__(self, path: str, key_field: str | None, text_field: str | None,
                 tokens_field: str | None) -> None:
        from ..io.jsonl import read_jsonl_docs

        if text_field:
            self.keys, self.items = read_jsonl_docs(path, key_field, text_field)
        else:
            self.keys, self.items = _read_token_sets(path, key_field, tokens_field or "tokens")

    def __len__(self) -> int:
        return len(self.items)

    def blocks(self, size: int = 65536) -> Any:
        for s in range(0, len(self.items), size):
            yield s, self.items[s : s + size]


def _read_token_sets(path: str, key_field: str | None, field: str
                     ) -> tuple[list[Any], list[Any]]:
    from ..io.jsonl import iter_lines, json_error

    keys: list[Any] = []
    items: list[Any] = []
    for lineno, raw in iter_lines(path):
        try:
            obj = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid JSON ({json_error(exc)})") from exc
        if not isinstance(obj, dict) or field not in obj or (
                key_field is not None and key_field not in obj):
            needs = field if key_field is None else f"{key_field!r} and {field!r}"
            raise InputFormatError(f"{path}:{lineno}: needs the field(s) {needs}")
        if not isinstance(obj[field], list):
            raise InputFormatError(f"{path}:{lineno}: {field!r} must be a list of tokens")
        keys.append(lineno if key_field is None else obj[key_field])
        items.append(obj[field])
    return keys, items


def _items(index_metric: str, path: str, key_field: str | None, vector_field: str,
           text_field: str | None, tokens_field: str | None) -> Any:
    is_set = metric_class(index_metric).is_set
    if is_set or text_field or tokens_field:
        if not is_set:
            raise InputFormatError("--text-field and --tokens-field apply to jaccard indexes")
        if not text_field and not tokens_field:
            text_field = "text"
        ext = os.path.splitext(path)[1].lower()
        if ext in (".npy", ".fvecs", ".bvecs", ".ivecs"):
            raise InputFormatError(
                f"{path} holds vectors ({ext}); a jaccard index takes documents or token sets "
                "from JSON lines (.jsonl), one per line")
        return _ItemSource(path, key_field, text_field, tokens_field)
    return open_vectors(path, key_field, vector_field)


_JSON_LINES = (".jsonl", ".json", ".ndjson")


def _key_field(input_path: str, key_field: str | None, jsonl: bool = False,
               stream_default: str = "key", say: bool = True) -> str:
    """The key field of a JSON-lines input (``jsonl``: whatever its extension): the one
    named, else ``key`` or ``id``, whichever the first record holds (said on stderr with
    ``say``). A stream cannot be read twice: it gets ``stream_default``."""
    if key_field is not None:
        return key_field
    if is_stream(input_path):
        return stream_default
    is_jsonl = jsonl or os.path.splitext(input_path)[1].lower() in _JSON_LINES
    if not is_jsonl or not os.path.isfile(input_path):
        return "key"  # not JSON lines: no key field is read
    from ..io.jsonl import KEY_FIELDS, pick_key_field

    used, fields = pick_key_field(input_path, KEY_FIELDS)
    if used is None:
        raise InputFormatError(
            f"{input_path}: the first record has no {' or '.join(map(repr, KEY_FIELDS))} field "
            f"(fields: {', '.join(map(repr, fields[:8]))}); name the key field with --key-field")
    if say:
        click.echo(f"keys: field {used!r} of {input_path}", err=True)
    return used


def _check_shingle(index: Index, shingle: str | None) -> None:
    if shingle is None or not index.metric.is_set:
        return
    from ..hashing.shingles import parse_shingle

    kind, n = parse_shingle(shingle)
    if f"{kind}:{n}" != index.options.get("shingle"):
        raise InputFormatError(
            f"--shingle {shingle} differs from the index's {index.options.get('shingle')}; "
            "an index shingles every document the same way")


_input_options = [
    click.option("--input", "input_path", required=True,
                 type=click.Path(dir_okay=False, allow_dash=True),
                 help="Vectors: .npy, .fvecs, .bvecs, .ivecs or JSON lines (-: standard "
                      "input, .npy or JSON lines)."),
    click.option("--keys", "keys_file", type=click.Path(dir_okay=False, allow_dash=True),
                 help="One key per line (default: row numbers 0..n-1; -: standard input)."),
    click.option("--key-field",
                 help="JSON lines key field (default: 'key' or 'id', whichever the first "
                      "record has; from a stream: 'key')."),
    click.option("--vector-field", default="vector", show_default=True,
                 help="JSON lines vector field."),
    click.option("--batch-size", type=click.IntRange(min=1),
                 help="Rows per transaction (default: the whole file in one)."),
    click.option("--text-field", help="jaccard: JSON lines field holding each document."),
    click.option("--tokens-field", help="jaccard: JSON lines field holding a token list."),
]


def _apply_nice(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value:
        if not hasattr(os, "nice"):
            raise click.BadParameter("this platform has no process priorities", ctx, param)
        new = os.nice(value)
        # Linux gives each thread its own priority and os.nice() sets the caller's only;
        # threads started before (OpenBLAS's workers, created when numpy loads) get it here
        tasks = "/proc/self/task"
        for tid in os.listdir(tasks) if os.path.isdir(tasks) else []:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), new)
            except OSError:  # the thread has ended
                pass
    return value


_nice_option = click.option(
    "--nice", type=click.IntRange(0, 19), default=0, show_default=True, expose_value=False,
    callback=_apply_nice,
    help="Lower this process's CPU priority by N first (like nice(1)), so reader processes "
         "keep their speed while it writes.")


_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0),
    help="Seconds to wait for the write lock while another process writes (default: "
         "no limit).")


def _with_inputs(f: Any) -> Any:
    for o in reversed(_input_options):
        f = o(f)
    return f


@cli.command("add", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@_with_inputs
@click.option("--upsert", is_flag=True, help="Replace the vectors of keys that exist.")
@click.option("--skip-existing", is_flag=True,
              help="Leave keys the index holds as they are and add the others (resumes an "
                   "interrupted add without rewriting what it committed).")
@click.option("--shingle", help="jaccard: must match the index's shingles (a check).")
@_timeout_option
@_nice_option
@_fmt_option
def add_cmd(path: str, input_path: str, keys_file: str | None, key_field: str | None,
            vector_field: str, batch_size: int | None, text_field: str | None,
            tokens_field: str | None, upsert: bool, skip_existing: bool, shingle: str | None,
            timeout: float | None, fmt: str) -> None:
    """Add vectors (or, to a jaccard index, documents) from a file to the index at PATH.

    With --batch-size, each batch is committed on its own: after a failure or Ctrl-C the
    command says how many rows were committed, and --skip-existing adds the rest."""
    _one_stdin(("--input", input_path), ("--keys", keys_file))
    if upsert and skip_existing:
        raise click.UsageError("--upsert replaces existing keys, --skip-existing keeps them: "
                               "give one")
    with open_index(path) as index:
        _check_shingle(index, shingle)
        src = _items(index.metric.name, input_path, _key_field(input_path, key_field),
                     vector_field, text_field, tokens_field)
        t0 = time.perf_counter()
        how = "upsert" if upsert else "skip" if skip_existing else "add"
        counts = load(index, src, keys_file, how, batch_size, timeout)
        dt = time.perf_counter() - t0
        shown = {"added": counts["added"]}
        if upsert:
            shown["replaced"] = counts["replaced"]
        if skip_existing:
            shown["skipped"] = counts["skipped"]
        emit([{**shown, "seconds": round(dt, 3), "vectors_per_s": round(len(src) / dt),
               "items": len(index)}], fmt)


@cli.command("build", context_settings=CONTEXT)
@click.argument("path", type=click.Path(file_okay=False))
@_with_inputs
@click.option("--metric", required=True, type=click.Choice(["cosine", "l2", "l1", "hamming", "jaccard"]))
@_create_options
@_timeout_option
@click.option("--shards", type=click.IntRange(1, 4096),
              help="Build S shard indexes under PATH (vectors), queried as one index.")
@click.option("--dask", "scheduler", metavar="SCHEDULER",
              help="With --shards: build the shards on Dask, local:N or a scheduler address.")
@_fmt_option
def build_cmd(path: str, input_path: str, keys_file: str | None, key_field: str | None,
              vector_field: str, batch_size: int | None, text_field: str | None,
              tokens_field: str | None, metric: str, timeout: float | None,
              shards: int | None, scheduler: str | None, fmt: str, **kw: Any) -> None:
    """Create an index at PATH and bulk-load a file into it.

    A build that fails or is interrupted removes the index it created. With --shards, PATH
    holds S ordinary indexes with one family and a manifest; `lshdb query`, `stats` and
    `check` read it as one index."""
    _one_stdin(("--input", input_path), ("--keys", keys_file))
    key_field = _key_field(input_path, key_field)
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
                       scheduler, fmt, _options(**kw))
        return
    src = _items(metric, input_path, key_field, vector_field, text_field, tokens_field)
    dim = cls.input_dim(src.dim) if cls.takes_dim else None
    t0 = time.perf_counter()
    index = create(path, metric=metric, dim=dim, **_options(**kw))
    try:
        with index:
            n = load(index, src, keys_file, "add", batch_size, timeout,
                      resumable=False)["added"]
            summary = _summary(index)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # nothing half-built is left behind
        raise
    dt = time.perf_counter() - t0
    emit([{**summary, "added": n, "seconds": round(dt, 3), "vectors_per_s": round(n / dt)}],
         fmt)


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


@cli.command("query", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--input", "input_path", required=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="Query vectors (same formats as add; -: standard input).")
@click.option("-k", "k", type=click.IntRange(min=1),
              help="Neighbours per query (default 10; with --threshold: all that qualify).")
@click.option("--probes", type=int, help="Buckets probed per query (default: stored).")
@click.option("--candidates", type=int, help="Cap on candidates re-ranked (0: none).")
@click.option("--min-hits", type=int,
              help="Keep candidates found in at least this many tables (default: stored).")
@click.option("--rerank", type=int,
              help="With codes: re-rank exactly the best N by Hamming distance (default: stored).")
@click.option("--scan/--no-scan", default=None,
              help="Rank every stored item (by code with codes=B, else exactly) instead of "
                   "probing buckets (default: stored).")
@click.option("--key-field", hidden=True, help="Ignored: queries need no keys.")
@click.option("--vector-field", default="vector", show_default=True)
@click.option("--text-field", help="jaccard: JSON lines field holding each query document.")
@click.option("--tokens-field", help="jaccard: JSON lines field holding a token list.")
@click.option("--threshold", type=float,
              help="Every item within this distance (jaccard: with Jaccard >= this); -k "
                   "caps the count.")
@click.option("--estimate", is_flag=True, help="jaccard: score by signatures, not exactly.")
@click.option("--dask", "scheduler", metavar="SCHEDULER",
              help="A sharded index: run each shard's part on a Dask worker (local:N or an "
                   "address; the shards must be on the workers' disks).")
@_fmt_option
def query_cmd(path: str, input_path: str, k: int | None, probes: int | None,
              candidates: int | None, min_hits: int | None, rerank: int | None,
              scan: bool | None, key_field: str | None,
              vector_field: str,
              text_field: str | None, tokens_field: str | None, threshold: float | None,
              estimate: bool, scheduler: str | None, fmt: str) -> None:
    """Print the k nearest items of each query: {"query": i, "results": [...]}.

    With --threshold, every candidate within that distance instead, nearest first (at most
    -k). For a jaccard index the results carry "jaccard" scores instead of distances."""
    with open_index(path, readonly=True) as index:
        src = _items(index.metric.name, input_path, None, vector_field, text_field,
                     tokens_field)  # results are numbered by query: no keys needed
        if len(src) == 0:
            raise InputFormatError("the input holds no queries")
        score = index.metric.score_field
        extra: dict[str, Any] = {"threshold": threshold}
        if index.metric.is_set:
            extra["exact"] = False if estimate else None
        elif estimate:
            raise InputFormatError("--estimate applies to jaccard indexes")
        if k is None and threshold is None:
            k = 10
        with contextlib.ExitStack() as stack:
            if scheduler is None:
                batch = stack.enter_context(index.reader()).query_batch
            else:
                from ..dask.client import connect

                if not hasattr(index, "shard_paths"):
                    raise click.UsageError("--dask queries a sharded index (build --shards)")
                client = stack.enter_context(connect(scheduler))
                # a sharded index (checked above) takes the Dask client
                batch = functools.partial(index.query_batch, client=client)  # type: ignore[call-arg]
            for s, Q in src.blocks(4096):
                res = batch(Q, k, probes=probes, candidates=candidates,
                            min_hits=min_hits, rerank=rerank, scan=scan, **extra)
                if fmt == "json":
                    emit(({"query": s + i, "results": [{"key": key, score: d} for key, d in hits]}
                          for i, hits in enumerate(res)), fmt)
                else:
                    emit([{"query": s + i, "rank": j + 1, "key": key, score: d}
                          for i, hits in enumerate(res) for j, (key, d) in enumerate(hits)], fmt)


@cli.command("get", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.argument("key")
@click.option("--int-key", is_flag=True, help="Treat KEY as an integer.")
def get_cmd(path: str, key: str, int_key: bool) -> None:
    """Print the stored vector of KEY as JSON."""
    the_key: Any = key
    if int_key:
        try:
            the_key = int(key)
        except ValueError:
            raise click.BadParameter(f"{key!r} is not an integer", param_hint="KEY") from None
    with open_index(path, readonly=True) as index:
        try:
            v = index.get(the_key)
        except KeyNotFoundError:
            if not int_key and re.fullmatch(r"-?(0|[1-9][0-9]*)", key) and int(key) in index:
                raise KeyNotFoundError(f"key {key!r} (a string) is not in the index, but the "
                                       f"integer {key} is: add --int-key") from None
            raise
        click.echo(json.dumps({"key": the_key, "vector": tidy(v.tolist())}))


@cli.command("delete", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--keys", "keys_file", required=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="One key per line (-: standard input).")
@click.option("--missing-ok", is_flag=True, help="Skip keys that are not in the index.")
@_timeout_option
@_nice_option
@_fmt_option
def delete_cmd(path: str, keys_file: str, missing_ok: bool, timeout: float | None,
               fmt: str) -> None:
    """Delete the keys listed in a file (one transaction)."""
    keys = read_keys(keys_file)
    with open_index(path) as index:
        w = write_block(index, timeout)
        try:
            n = w.delete(keys, missing_ok=missing_ok)
        except BaseException:
            w.__exit__(*sys.exc_info())
            raise
        w.__exit__(None, None, None)
        emit([{"deleted": n, "items": len(index)}], fmt)


@cli.command("stats", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--no-buckets", is_flag=True, help="Skip the per-table bucket scan.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also draw the S-curve and bucket sizes to a PNG (needs matplotlib; -: "
                   "the PNG goes to standard output instead of the statistics).")
@_fmt_option
def stats_cmd(path: str, no_buckets: bool, plot_path: str | None, fmt: str) -> None:
    """Parameters, counts, bytes on disk by part, bucket sizes and the S-curve."""
    from ..tuning import report

    with open_index(path, readonly=True) as index:
        st = index.stats(buckets=not no_buckets)
    tables = st.pop("tables", [])
    histogram = st.pop("bucket_histogram", [])
    curve = report.s_curve(st)
    if plot_path:
        report.plot(plot_path, curve, histogram)
        if plot_path == STDIO:
            return
    if fmt == "json":
        emit([{**st, "tables": tables, "bucket_histogram": histogram, "s_curve": curve}], fmt)
        return
    emit([{"field": k, "value": v} for k, v in _flatten(st).items()], fmt)
    if tables:
        click.echo("")
        emit([{"table": t, **row} for t, row in enumerate(tables)], fmt)
    if curve:
        click.echo(f"\nS-curve: probability of becoming a candidate by {curve['axis']} "
                   f"(home buckets only)")
        for line in report.bars([f"{x:.2f}" for x in curve["x"]], curve["p_candidate"]):
            click.echo(line)
    if histogram:
        click.echo("\nbucket sizes (ids per bucket: buckets, all tables)")
        for line in report.bars([h["ids"] for h in histogram],
                                [float(h["buckets"]) for h in histogram], fmt="{:.0f}"):
            click.echo(line)


@cli.command("check", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--fix", is_flag=True, help="Repair what is safe and say what was done.")
@click.option("--drop-damaged", is_flag=True,
              help="With --fix: remove the items whose rows fail their checksum (keys, "
                   "postings, codes) and print their keys, to add them again.")
@_fmt_option
def check_cmd(path: str, fix: bool, drop_damaged: bool, fmt: str) -> None:
    """Deep integrity check; exit status 1 on any problem.

    The check runs in a child process: a damaged LMDB page that kills it (SIGBUS) is
    reported as a problem."""
    if drop_damaged and not fix:
        raise click.UsageError("--drop-damaged removes items from the index; give --fix too")
    bars = PhaseBars()
    try:
        if os.path.isfile(os.path.join(path, "shards.json")):
            from ..index.sharded import check_sharded

            report = check_sharded(path, fix=fix, progress=bars, isolate=True,
                                   drop_damaged=drop_damaged)
        else:
            report = deep_check(path, fix=fix, progress=bars, isolate=True,
                                drop_damaged=drop_damaged)
    finally:
        bars.close()
    report = {**report, "problems": [cli_words(p) for p in report["problems"]]}
    if fmt == "json":
        emit([report], fmt)
    else:
        for key in report.get("dropped", []):
            click.echo(f"dropped: {json.dumps(key, default=_json_default)}")
        for line in report["fixed"]:
            click.echo(f"fixed: {line}")
        for line in report["problems"]:
            click.echo(f"problem: {line}")
        click.echo("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
    if not report["ok"]:
        sys.exit(1)


@cli.command("compact", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--retune", is_flag=True,
              help="Also re-choose the unset build parameters from the live rows.")
@click.option("--timeout", type=float, help="Seconds to wait for the write lock.")
@_nice_option
@_fmt_option
def compact_cmd(path: str, retune: bool, timeout: float | None, fmt: str) -> None:
    """Rewrite the live items into a new generation (reclaims deleted space)."""
    bars = PhaseBars()
    with open_index(path) as index:
        try:
            try:
                report = index.compact(timeout=0, retune=retune, progress=bars)
            except LockTimeoutError:
                say_waiting(index.path, timeout)
                report = index.compact(timeout=timeout, retune=retune, progress=bars)
        finally:
            bars.close()
    emit([report], fmt)


@cli.command("backup", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@_fmt_option
def backup_cmd(path: str, dest: str, fmt: str) -> None:
    """Copy the index at PATH to the new path DEST, consistently, while it is in use.

    Readers and a writer keep working; the copy holds the index as of one moment (LMDB's
    own copy plus the rows committed at that moment) and is an ordinary index. DEST must
    not exist. See docs/operations.md for restoring and moving an index."""
    if dest == STDIO:
        raise click.UsageError("DEST is the folder of the copy, which standard output (-) "
                               "cannot hold; give a path that does not exist yet")
    bars = PhaseBars()
    with open_index(path, readonly=True) as index:
        try:
            report = index.backup(dest, progress=bars)
        finally:
            bars.close()
    emit([report], fmt)


@cli.command("dedup", context_settings=CONTEXT)
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--threshold", default=0.8, show_default=True, type=float,
              help="Pairs with Jaccard >= this are duplicates.")
@click.option("--shingle", default="word:5", show_default=True,
              help="word:N (N words, after lower-casing) or char:N.")
@click.option("--verify", type=click.Choice(["exact", "estimate"]), default="exact",
              show_default=True, help="Score candidate pairs exactly or from signatures.")
@click.option("--key-field",
              help="Key field (default: 'key' or 'id', whichever the first record has; from "
                   "standard input, a pipe or with --dask: 'id').")
@click.option("--text-field", default="text", show_default=True)
@click.option("--out", "out", type=click.Path(allow_dash=True),
              help='Pairs as JSON lines {"a", "b", "jaccard"} (default and -: standard '
                   "output). With --dask: NAME.parquet is a folder of Parquet parts, NAME/ a "
                   "folder of JSON-lines parts.")
@click.option("--clusters", type=click.Path(allow_dash=True),
              help="Clusters as JSON lines (-: standard output; with --dask also as --out).")
@click.option("--keep", type=click.Choice(["first", "longest"]),
              help="Write the deduplicated collection, keeping this member of a cluster.")
@click.option("--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where --keep writes the deduplicated collection (-: standard output).")
@click.option("--against", type=click.Path(exists=True, file_okay=False),
              help="Find the documents' duplicates among this jaccard index's items instead.")
@click.option("--add-to", type=click.Path(exists=True, file_okay=False),
              help="With --dask: then add the documents kept (and, with --against, matching "
                   "nothing there) to this jaccard index.")
@click.option("--dask", "scheduler", metavar="SCHEDULER",
              help="Run on Dask: local:N (N worker processes) or a scheduler address. "
                   "INPUT may then be JSON lines or Parquet files or globs.")
@click.option("--num-perm", default=128, show_default=True)
@click.option("--mode", type=click.Choice(["oph", "classic"]), default="oph", show_default=True)
@click.option("--seed", default=0, show_default=True)
def dedup_cmd(inputs: tuple[str, ...], threshold: float, shingle: str, verify: str,
              key_field: str | None, text_field: str, out: str | None, clusters: str | None,
              keep: str | None, output: str | None, against: str | None, add_to: str | None,
              scheduler: str | None, num_perm: int, mode: str, seed: int) -> None:
    """Near-duplicate pairs and clusters of a JSON-lines collection (a similarity self-join).

    Candidate pairs share a MinHash band; each is verified (exactly by default) and the
    pairs are grouped into clusters. A summary goes to stderr. INPUT.jsonl may be - for
    standard input. With --dask the same pairs and clusters are computed on a Dask cluster
    (needs lshdb[dask]), from JSON-lines or Parquet files or globs.

    Bands lean towards recall (14 bands of 9 rows at 0.8): every candidate is verified, so
    a false candidate costs a little time while a missed one is lost. An index created
    with --threshold uses datasketch's even weighting instead (9 x 13 at 0.8), as its
    estimated scores may be unverified. See docs/jaccard.md.
    """
    from ..text.files import dedup_jsonl

    if (keep is None) != (output is None):
        raise click.UsageError("--keep and --output go together")
    if not 0.0 < threshold <= 1.0:
        raise click.UsageError(f"--threshold must be in (0, 1]; found {threshold}")
    if scheduler:
        if keep:
            raise click.UsageError("--keep/--output do not run on --dask; use --add-to")
        if STDIO in (*inputs, clusters):
            raise click.UsageError("with --dask, INPUT and --clusters are files, not -")
        _dedup_dask(list(inputs), scheduler, key_field or "id", text_field,
                    None if out == STDIO else out, clusters, against, add_to,
                    threshold=threshold, shingle=shingle, num_perm=num_perm, verify=verify,
                    mode=mode, seed=seed)
        return
    if add_to:
        raise click.UsageError("--add-to needs --dask")
    if len(inputs) != 1:
        raise click.UsageError("without --dask, give one JSON-lines INPUT")
    input_path = inputs[0]
    out = out or STDIO
    _one_stdout(("--out", out), ("--clusters", clusters), ("--output", output))
    if output is not None and is_stream(input_path):
        raise click.UsageError("--keep copies the kept lines from a second reading of "
                               "INPUT.jsonl; give it as a file, not standard input or a pipe")
    # (the summary names the key field: stderr holds that one JSON object)
    key_field = _key_field(input_path, key_field, jsonl=True, stream_default="id", say=False)
    if against:
        _dedup_against(input_path, against, threshold, key_field, text_field, out, verify)
        return
    bars = PhaseBars()
    try:
        result = dedup_jsonl(input_path, key_field=key_field, text_field=text_field,
                             pairs=out, clusters=clusters, output=output, keep=keep or "first",
                             progress=bars, threshold=threshold, shingle=shingle,
                             num_perm=num_perm, verify=verify, mode=mode, seed=seed)
    finally:
        bars.close()
    click.echo(json.dumps({"summary": {**result.stats, "key_field": key_field}},
                          default=_json_default), err=True)


def _dedup_dask(inputs: list[str], scheduler: str, key_field: str, text_field: str,
                out: str | None, clusters: str | None, against: str | None,
                add_to: str | None, **options: Any) -> None:
    import tempfile

    from ..dask.jobs import run_dedup

    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="lshdb-dedup-")
        out = os.path.join(tmp, "pairs.jsonl")
    try:
        summary = run_dedup(inputs, scheduler, key_field, text_field, out, clusters, against,
                            add_to, **options)
        if tmp:
            with open(out, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    click.echo(json.dumps({"summary": summary}, default=_json_default), err=True)


def _one_stdout(*options: tuple[str, str | None]) -> None:
    """At most one output may go to standard output."""
    _one_dash("output", options)


def _one_stdin(*options: tuple[str, str | None]) -> None:
    """At most one input may come from standard input."""
    _one_dash("input", options)


def _one_dash(stream: str, options: tuple[tuple[str, str | None], ...]) -> None:
    named = [name for name, value in options if value == STDIO]
    if len(named) > 1:
        both = len(named) == 2
        raise click.UsageError(f"{' and '.join(named)} {'both' if both else 'all'} name "
                               f"standard {stream} (-); give {'one' if both else 'all but one'} "
                               "of them a file")


def _dedup_against(input_path: str, index_path: str, threshold: float, key_field: str,
                   text_field: str, out: str, verify: str) -> None:
    from ..io.jsonl import read_jsonl_docs
    from ..storage.streams import open_output

    keys, texts = read_jsonl_docs(input_path, key_field, text_field)
    t0 = time.perf_counter()
    n_pairs = 0
    with open_index(index_path, readonly=True) as index:
        if not index.metric.is_set:
            raise InputFormatError(f"{index_path} is a {index.metric.name} index, not jaccard")
        exact = None if verify == "exact" else False
        with open_output(out) as sink, index.reader() as r, \
                progress(len(texts), "matching") as bar:
            for key, text in zip(keys, texts):
                for other, score in r.query(text, k=None, threshold=threshold, exact=exact):
                    sink.write(json.dumps({"a": key, "b": other, "jaccard": score},
                                          default=_json_default) + "\n")
                    n_pairs += 1
                bar.update(1)
    click.echo(json.dumps({"summary": {"documents": len(texts), "pairs": n_pairs,
                                       "seconds": round(time.perf_counter() - t0, 3),
                                       "key_field": key_field}}), err=True)


@cli.command("tune", context_settings=CONTEXT)
@click.argument("path", required=False, type=click.Path(file_okay=False))
@click.option("--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Tune on vectors from a file before building (needs --metric; -: "
                   "standard input).")
@click.option("--metric", type=click.Choice(["cosine", "l2", "l1", "hamming"]),
              help="With --input: the metric of the index to be built.")
@click.option("--sample", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="With --input: rows of the file, drawn at random, to build the trial "
                   "index from.")
@click.option("--target-recall", default=0.9, show_default=True, type=float)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1),
              help="Neighbours per query.")
@click.option("--queries", default=200, show_default=True, type=click.IntRange(min=1),
              help="Sample queries.")
@click.option("--apply", is_flag=True,
              help="Store the chosen settings as the index's defaults; refused (exit 1, "
                   "nothing stored) when the held-out recall misses the target by more "
                   "than its standard error.")
@_fmt_option
def tune_cmd(path: str | None, input_path: str | None, metric: str | None, sample: int,
             target_recall: float, k: int, queries: int, apply: bool, fmt: str) -> None:
    """Measure recall and queries/s over query settings; print the frontier and the choice."""
    import tempfile

    if (path is None) == (input_path is None):
        raise click.UsageError("give an index PATH, or --input FILE with --metric")
    tmp = None
    try:
        if input_path:
            if metric is None:
                raise click.UsageError("--input needs --metric")
            if apply:
                raise click.UsageError("--apply stores settings in an index; give its PATH")
            rows = open_vectors(input_path).sample(sample)
            tmp = tempfile.mkdtemp(prefix="lshdb-tune-")
            index = create(os.path.join(tmp, "trial.lshdb"), metric=metric,
                           dim=metric_class(metric).input_dim(rows.shape[1]),
                           target_recall=target_recall)
            index.add(range(len(rows)), rows)
        else:
            index = open_index(str(path), readonly=not apply)
        bars = PhaseBars()
        refused: TuningError | None = None
        with index:
            try:
                result = index.tune(target_recall, k, queries, apply=apply, progress=bars)
            except TuningError as exc:  # the measurements are printed, then the error
                refused, result = exc, exc.result
            finally:
                bars.close()
            build = index.family.describe() if index.family else None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    cols = ["scan", "probes", "min_hits", "candidates", "rerank", "recall", "held_out_recall",
            "median_ms", "queries_per_s"]
    if fmt == "json":
        emit([{"build": build, **{k2: v for k2, v in result.items() if k2 != "explored"}}], fmt)
    else:
        click.echo(f"build parameters: {json.dumps(build)}")
        click.echo(f"recall/speed frontier (recall@{k}, {result['queries']} queries):")
        emit([{c: row.get(c) for c in cols} for row in result["frontier"]], fmt, table=True)
        chosen = result["chosen"]
        click.echo("chosen: " + (json.dumps({c: chosen.get(c) for c in cols}) if chosen else
                                 f"none reaches recall {target_recall}"))
    if refused is not None:
        raise refused


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """Bytes from ``16M``-style sizes (K, M, G: powers of 1024)."""
    text = value.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        n = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 16M, 512K, 1048576)") from None
    if n < 1:
        raise click.BadParameter(f"{value!r} must be at least 1 byte")
    return n


@cli.command("serve", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; see docs/serve.md).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port; the first stdout line says which).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes, each opening the index itself (default: one per CPU).")
@click.option("--readonly", is_flag=True, help="Refuse writes (403).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False),
              help="File holding a bearer token that every request but /healthz must send.")
@click.option("--max-body", default="16M", show_default=True, callback=_size,
              help="Largest request body (413 beyond it).")
@click.option("--max-batch", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Most vectors or keys in one request (413 beyond it).")
@click.option("--write-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a write waits for the index's write lock (503 after).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
def serve_cmd(path: str, **options: Any) -> None:
    """Serve the index at PATH over HTTP (JSON) until SIGTERM or Ctrl-C.

    Needs the serve extra: pip install 'lshdb[serve]'. API and operations: docs/serve.md.
    """
    from ..serve import run

    sys.exit(run(path, **options))


@cli.command("demo", context_settings=CONTEXT)
@click.option("-n", "n", default=100_000, show_default=True,
              type=click.IntRange(min=DEMO_MIN_ROWS), help="Vectors to generate.")
@click.option("--dim", default=128, show_default=True, type=click.IntRange(1, 65536))
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine", show_default=True)
@click.option("--queries", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--keep", type=click.Path(file_okay=False), help="Build here and keep the index.")
@_fmt_option
def demo_cmd(n: int, dim: int, metric: str, queries: int, seed: int, keep: str | None,
             fmt: str) -> None:
    """Build an index from generated clustered vectors, query it, compare with brute force."""
    from ..demo import run_demo

    emit([run_demo(n, dim, metric, queries, seed, keep, progress)], fmt)


def main() -> None:
    cli(prog_name="lshdb")


if __name__ == "__main__":
    main()
