"""Loading an input into an index: write blocks that say when they wait, batches that say
what was committed when a later one fails or is interrupted."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputFormatError, InvalidVectorError, LockTimeoutError
from ..io.inputs import read_keys
from .progress import progress

if TYPE_CHECKING:
    from ..index.index import Index

__all__ = ["say_waiting", "write_block", "load"]

def say_waiting(path: str, timeout: float | None) -> None:
    limit = "" if timeout is None else f" (for up to {timeout:g} s: --timeout)"
    click.echo(f"waiting for the write lock of {path}: another process is writing{limit}",
               err=True)


def write_block(index: Index, timeout: float | None) -> Any:
    """An entered write block; says on stderr when it has to wait for the write lock."""
    try:
        w = index.writer(timeout=0)
        w.__enter__()
        return w
    except LockTimeoutError:
        pass
    say_waiting(index.path, timeout)
    w = index.writer(timeout=timeout)
    w.__enter__()
    return w


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives during the block until it ends (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.SIG_DFL)
        if held:
            raise KeyboardInterrupt


def load(index: Index, src: Any, keys_file: str | None, how: str, batch: int | None,
          timeout: float | None = None, resumable: bool = True) -> dict[str, int]:
    """Write the input in transactions of ``batch`` rows (``how``: add, upsert or skip,
    that is add --skip-existing); returns the counts of rows added, replaced, skipped.
    When a later transaction fails or is interrupted, says how many rows the earlier ones
    committed (``resumable``: and how to add the rest)."""
    keys: list[Any] | None = read_keys(keys_file) if keys_file else src.keys
    if keys is not None and len(keys) != len(src):
        raise InputFormatError(f"{len(keys)} keys for {len(src)} vectors; give one key per vector")
    n = len(src)
    if n == 0:
        raise InputFormatError("the input holds no vectors or items")
    size = batch or n
    counts = {"added": 0, "replaced": 0, "skipped": 0}
    pending = dict(counts)
    committed = 0
    with progress(n, "adding") as bar:
        writer = None
        in_txn = 0
        try:
            for s, X in src.blocks(min(size, 65536)):
                if writer is None:
                    writer = write_block(index, timeout)
                ks = keys[s : s + len(X)] if keys is not None else range(s, s + len(X))
                try:
                    if how == "upsert":
                        replaced = writer.upsert(ks, X)
                        pending["replaced"] += replaced
                        pending["added"] += len(X) - replaced
                    else:
                        added = writer.add(ks, X, skip_existing=how == "skip")
                        pending["added"] += added
                        pending["skipped"] += len(X) - added
                except InvalidVectorError as exc:  # its row numbers count from the block's
                    raise exc.in_input(s) from None
                in_txn += len(X)
                if in_txn >= size:
                    w, writer = writer, None
                    with _interrupt_after():  # the commit and its count go together
                        w.__exit__(None, None, None)
                        committed += in_txn
                    in_txn = 0
                    counts = {c: counts[c] + pending[c] for c in counts}
                    pending = dict.fromkeys(counts, 0)
                bar.update(len(X))
            if writer is not None:
                w, writer = writer, None
                w.__exit__(None, None, None)
                counts = {c: counts[c] + pending[c] for c in counts}
        except BaseException as exc:
            if writer is not None:
                writer.__exit__(*sys.exc_info())
            if committed and resumable:
                what = "the interruption" if isinstance(exc, (KeyboardInterrupt, click.Abort)) \
                    else "the error"
                click.echo(f"{committed} of {n} rows were committed before {what} (the "
                           f"input's first {committed}); add the rest with --skip-existing",
                           err=True)
            raise
    return counts
