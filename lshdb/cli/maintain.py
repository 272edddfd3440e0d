"""Maintenance commands: check, compact, backup, tune."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import open as open_index  # recognises a sharded folder too
from ..errors import TuningError
from ..index.index import check as deep_check
from ..index.trial import tune_rows
from ..io.inputs import open_vectors
from ..storage.streams import STDIO
from .base import (
    CONTEXT,
    emit,
    fmt_option,
    json_default,
    nice_option,
    waiting_notice,
)
from .progress import PhaseBars
from .words import cli_words


@click.command("check", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--fix", is_flag=True, help="Repair what is safe and say what was done.")
@click.option("--drop-damaged", is_flag=True,
              help="With --fix: remove the items whose rows fail their checksum (keys, "
                   "postings, codes) and print their keys, to add them again.")
@fmt_option
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
            click.echo(f"dropped: {json.dumps(key, default=json_default)}")
        for line in report["fixed"]:
            click.echo(f"fixed: {line}")
        for line in report["problems"]:
            click.echo(f"problem: {line}")
        click.echo("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
    if not report["ok"]:
        sys.exit(1)


@click.command("compact", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--retune", is_flag=True,
              help="Also re-choose the unset build parameters from the live rows.")
@click.option("--timeout", type=float, help="Seconds to wait for the write lock.")
@nice_option
@fmt_option
def compact_cmd(path: str, retune: bool, timeout: float | None, fmt: str) -> None:
    """Rewrite the live items into a new generation (reclaims deleted space)."""
    bars = PhaseBars()
    with open_index(path) as index:
        try:
            report = index.compact(timeout=timeout, retune=retune, progress=bars,
                                   on_wait=waiting_notice(index.path, timeout))
        finally:
            bars.close()
    emit([report], fmt)


@click.command("backup", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@fmt_option
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


@click.command("tune", context_settings=CONTEXT)
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
@fmt_option
def tune_cmd(path: str | None, input_path: str | None, metric: str | None, sample: int,
             target_recall: float, k: int, queries: int, apply: bool, fmt: str) -> None:
    """Measure recall and queries/s over query settings; print the frontier and the choice."""
    if (path is None) == (input_path is None):
        raise click.UsageError("give an index PATH, or --input FILE with --metric")
    bars = PhaseBars()
    refused: TuningError | None = None
    try:
        if input_path:
            if metric is None:
                raise click.UsageError("--input needs --metric")
            if apply:
                raise click.UsageError("--apply stores settings in an index; give its PATH")
            result = tune_rows(open_vectors(input_path).sample(sample), metric, target_recall,
                               k, queries, progress=bars)
            build = result["build"]
        else:
            with open_index(str(path), readonly=not apply) as index:
                try:
                    result = index.tune(target_recall, k, queries, apply=apply, progress=bars)
                except TuningError as exc:  # the measurements are printed, then the error
                    refused, result = exc, exc.result
                build = index.family.describe() if index.family else None
    finally:
        bars.close()
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
