"""Commands that read: query, get, stats."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from typing import Any

import click

from .. import open as open_index  # recognises a sharded folder too
from ..errors import (
    InputFormatError,
    KeyNotFoundError,
)
from ..io.items import open_items
from ..storage.streams import STDIO
from .base import (
    CONTEXT,
    emit,
    flatten,
    fmt_option,
)
from .words import tidy


@click.command("query", context_settings=CONTEXT)
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
@fmt_option
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
        src = open_items(index.metric.name, input_path, None, vector_field, text_field,
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


@click.command("get", context_settings=CONTEXT)
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


@click.command("stats", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--no-buckets", is_flag=True, help="Skip the per-table bucket scan.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also draw the S-curve and bucket sizes to a PNG (needs matplotlib; -: "
                   "the PNG goes to standard output instead of the statistics).")
@fmt_option
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
    emit([{"field": k, "value": v} for k, v in flatten(st).items()], fmt)
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
