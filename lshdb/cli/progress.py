"""Progress of long work on stderr: a bar on a terminal, else a line every few seconds."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

__all__ = ["PROGRESS_EVERY", "progress", "PhaseBars"]

# without a terminal, long work says how far it got in a line this often (seconds)
PROGRESS_EVERY = 5.0


def progress(length: int, label: str) -> Any:
    """A progress bar on stderr when it is a terminal; otherwise a line on stderr every
    :data:`PROGRESS_EVERY` seconds (logs of long jobs show they are alive)."""
    if sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True,
                                 show_pos=True)
    return _ProgressLines(length, label)


class _ProgressLines:
    """The parts of click's progress bar that lshdb uses, printed as occasional lines."""

    def __init__(self, length: int, label: str) -> None:
        self.length, self.label, self.pos = length, label, 0
        self._t0 = self._last = time.monotonic()

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int) -> None:
        self.pos += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY and self.pos < self.length:
            self._last = now
            click.echo(f"{self.label}: {self.pos}/{self.length} "
                       f"({100 * self.pos // max(self.length, 1)}%, {now - self._t0:.0f} s)",
                       err=True)

    def render_finish(self) -> None:
        pass


class PhaseBars:
    """A progress bar per phase for callbacks of the form progress(phase, done, total)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.bar is None or self.bar.label != phase:
            self.close()
            self.bar = progress(max(total, 1), phase)
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
