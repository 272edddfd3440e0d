"""The ``lshdb`` group and what its commands share: options, input sources, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click
import numpy as np

from .. import __version__
from ..errors import (
    InputFormatError,
    LshdbError,
)
from ..index.index import Index
from ..io.items import key_field_of
from ..priority import lower_priority
from ..storage.streams import STDIO
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


def fmt_option(f: Any) -> Any:
    return click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
                        show_default=True, help="JSON lines for scripts, a table for people.")(f)


def emit(records: Iterable[dict[str, Any]], fmt: str, table: bool = False) -> None:
    """Print records as JSON lines or as one aligned table (``table=True``: even a single
    wide record, which otherwise reads better as ``field: value`` lines)."""
    if fmt == "json":
        for r in records:
            click.echo(json.dumps(tidy(r), default=json_default))
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
        return json.dumps(v, default=json_default)
    return str(v)


def json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot serialise {type(v).__name__}")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
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


def create_options(f: Any) -> Any:
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


def given(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def index_summary(index: Index) -> dict[str, Any]:
    from ..metrics.sets import describe_sets

    fam = index.family.describe() if index.family else None
    return {"path": index.path, "metric": index.metric.name, **describe_sets(index.metric),
            "family": fam, "items": len(index)}


def resolve_key_field(input_path: str, field: str | None, jsonl: bool = False,
                      stream_default: str = "key", say: bool = True) -> str:
    """The key field of an input (see :func:`lshdb.io.items.key_field_of`); one found in
    the file is said on stderr with ``say``."""
    used, found = key_field_of(input_path, field, jsonl, stream_default)
    if found and say:
        click.echo(f"keys: field {used!r} of {input_path}", err=True)
    return used


def waiting_notice(path: str, timeout: float | None) -> Callable[[], None]:
    """An ``on_wait`` callback that says on stderr why a command waits for the write lock."""
    limit = "" if timeout is None else f" (for up to {timeout:g} s: --timeout)"

    def say() -> None:
        click.echo(f"waiting for the write lock of {path}: another process is writing{limit}",
                   err=True)
    return say


def check_shingle(index: Index, shingle: str | None) -> None:
    if shingle is None or not index.metric.is_set:
        return
    from ..hashing.shingles import parse_shingle

    kind, n = parse_shingle(shingle)
    if f"{kind}:{n}" != index.options.get("shingle"):
        raise InputFormatError(
            f"--shingle {shingle} differs from the index's {index.options.get('shingle')}; "
            "an index shingles every document the same way")


_INPUT_OPTIONS = [
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
        try:
            lower_priority(value)
        except OSError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


nice_option = click.option(
    "--nice", type=click.IntRange(0, 19), default=0, show_default=True, expose_value=False,
    callback=_apply_nice,
    help="Lower this process's CPU priority by N first (like nice(1)), so reader processes "
         "keep their speed while it writes.")


timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0),
    help="Seconds to wait for the write lock while another process writes (default: "
         "no limit).")


def with_inputs(f: Any) -> Any:
    for o in reversed(_INPUT_OPTIONS):
        f = o(f)
    return f


def one_stdout(*options: tuple[str, str | None]) -> None:
    """At most one output may go to standard output."""
    _one_dash("output", options)


def one_stdin(*options: tuple[str, str | None]) -> None:
    """At most one input may come from standard input."""
    _one_dash("input", options)


def _one_dash(stream: str, options: tuple[tuple[str, str | None], ...]) -> None:
    named = [name for name, value in options if value == STDIO]
    if len(named) > 1:
        both = len(named) == 2
        raise click.UsageError(f"{' and '.join(named)} {'both' if both else 'all'} name "
                               f"standard {stream} (-); give {'one' if both else 'all but one'} "
                               "of them a file")


def size_param(ctx: click.Context, param: click.Parameter, value: str) -> int:
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
