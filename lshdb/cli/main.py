"""The ``lshdb`` command line: parse, call the library, print.

Output is JSON lines by default (one object per line, for scripts) and an aligned table with
``--format table`` (for people). Every error is printed as ``Error: ...`` on stderr with exit
status 1. Long work shows a progress bar on stderr when it is a terminal, else a line every
few seconds (:mod:`lshdb.cli.progress`).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..demo import DEMO_MIN_ROWS
from .base import (
    CONTEXT,
    cli,
    emit,
    fmt_option,
    size_param,
)
from .dedupe import dedup_cmd
from .maintain import backup_cmd, check_cmd, compact_cmd, tune_cmd
from .progress import progress
from .reads import get_cmd, query_cmd, stats_cmd
from .writes import add_cmd, build_cmd, create_cmd, delete_cmd


@click.command("serve", context_settings=CONTEXT)
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
@click.option("--max-body", default="16M", show_default=True, callback=size_param,
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


@click.command("demo", context_settings=CONTEXT)
@click.option("-n", "n", default=100_000, show_default=True,
              type=click.IntRange(min=DEMO_MIN_ROWS), help="Vectors to generate.")
@click.option("--dim", default=128, show_default=True, type=click.IntRange(1, 65536))
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine", show_default=True)
@click.option("--queries", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--keep", type=click.Path(file_okay=False), help="Build here and keep the index.")
@fmt_option
def demo_cmd(n: int, dim: int, metric: str, queries: int, seed: int, keep: str | None,
             fmt: str) -> None:
    """Build an index from generated clustered vectors, query it, compare with brute force."""
    from ..demo import run_demo

    emit([run_demo(n, dim, metric, queries, seed, keep, progress)], fmt)


for _command in (create_cmd, add_cmd, build_cmd, delete_cmd, query_cmd, get_cmd, stats_cmd,
                 check_cmd, compact_cmd, backup_cmd, tune_cmd, dedup_cmd, serve_cmd, demo_cmd):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="lshdb")


if __name__ == "__main__":
    main()
