"""Serving an index over HTTP: ``lshdb serve`` and its client, ``lshdb.connect(url)``.

The server (:func:`run`, optional extra ``lshdb[serve]``: Starlette under uvicorn) is a
supervisor and N worker processes, each of which opens the index itself; the client
(:func:`connect`) needs only the standard library. See docs/serve.md.
"""

from __future__ import annotations

from typing import Any

from .client import Client, connect

__all__ = ["run", "connect", "Client"]


def run(path: str, **options: Any) -> int:
    """Serve the index at ``path`` until SIGTERM or SIGINT (see
    :func:`lshdb.serve.workers.run` for the options); returns the exit status."""
    from .workers import run as _run  # imports nothing from the serve extra until called

    return _run(path, **options)
