"""The dedup command: near-duplicate pairs and clusters of a collection."""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

import click

from ..storage.streams import STDIO, is_stream
from .base import (
    CONTEXT,
    json_default,
    one_stdout,
    resolve_key_field,
)
from .progress import PhaseBars


@click.command("dedup", context_settings=CONTEXT)
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
    one_stdout(("--out", out), ("--clusters", clusters), ("--output", output))
    if output is not None and is_stream(input_path):
        raise click.UsageError("--keep copies the kept lines from a second reading of "
                               "INPUT.jsonl; give it as a file, not standard input or a pipe")
    # (the summary names the key field: stderr holds that one JSON object)
    key_field = resolve_key_field(input_path, key_field, jsonl=True, stream_default="id", say=False)
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
                          default=json_default), err=True)


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
    click.echo(json.dumps({"summary": summary}, default=json_default), err=True)


def _dedup_against(input_path: str, index_path: str, threshold: float, key_field: str,
                   text_field: str, out: str, verify: str) -> None:
    from ..text.files import dedup_against_jsonl

    bars = PhaseBars()
    try:
        summary = dedup_against_jsonl(input_path, index_path, out, threshold=threshold,
                                      key_field=key_field, text_field=text_field,
                                      exact=verify == "exact", progress=bars)
    finally:
        bars.close()
    click.echo(json.dumps({"summary": {**summary, "key_field": key_field}}), err=True)
