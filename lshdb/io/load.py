"""Bulk loading: a source written into an index in transactions of a chosen size.

A :class:`Loader` commits every ``batch`` rows, so a load that fails or is interrupted
keeps what it committed, and says how much that was (:attr:`Loader.committed`): the input's
first rows, which ``mode="skip"`` (add, skipping keys the index holds) resumes after.
A Ctrl-C that arrives while a batch commits is held until the commit and its count agree.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import InputFormatError, InvalidParameterError, InvalidVectorError

if TYPE_CHECKING:
    from ..index.handle import Index
    from ..storage.codec import Key

__all__ = ["Loader", "MODES"]

MODES = ("add", "upsert", "skip")
_BLOCK = 65536


class Loader:
    """Writes sources into ``index`` in transactions of ``batch`` rows.

    Parameters
    ----------
    index
        An index opened for writing.
    mode
        ``add`` (a key the index holds is an error), ``upsert`` (replaces it) or ``skip``
        (leaves it as it is).
    batch
        Rows per transaction; None writes the whole source in one.
    timeout
        Seconds to wait for the write lock (None: no limit).
    on_wait
        Called once before waiting for the write lock another writer holds.
    progress
        Called as ``progress("adding", rows_written, rows_total)``.
    """

    def __init__(self, index: Index, mode: str = "add", batch: int | None = None,
                 timeout: float | None = None, on_wait: Callable[[], None] | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if batch is not None and batch < 1:
            raise InvalidParameterError(f"batch must be at least 1, not {batch}")
        self.index, self.mode, self.batch = index, mode, batch
        self.timeout, self.on_wait, self.progress = timeout, on_wait, progress
        #: rows committed by the last :meth:`run` (the source's first rows)
        self.committed = 0

    def run(self, source: Any, keys: Sequence[Key] | None = None) -> dict[str, int]:
        """Write ``source`` (``len`` and ``blocks(size)``, as :func:`~lshdb.io.open_items`
        gives) under ``keys`` (default: the source's own keys, else row numbers); returns
        the counts of rows ``added``, ``replaced`` and ``skipped``."""
        keys = keys if keys is not None else getattr(source, "keys", None)
        n = len(source)
        if keys is not None and len(keys) != n:
            raise InputFormatError(f"{len(keys)} keys for {n} vectors; give one key per vector")
        if n == 0:
            raise InputFormatError("the input holds no vectors or items")
        size = self.batch or n
        self.committed = 0
        counts = dict.fromkeys(("added", "replaced", "skipped"), 0)
        blocks = iter(source.blocks(min(size, _BLOCK)))
        block = next(blocks, None)
        while block is not None:
            pending = dict.fromkeys(counts, 0)
            written = 0
            with _HeldInterrupt() as held:
                with self.index.writer(self.timeout, self.on_wait) as w:
                    while block is not None and written < size:
                        s, X = block
                        ks = keys[s : s + len(X)] if keys is not None else range(s, s + len(X))
                        self._write(w, ks, X, s, pending)
                        written += len(X)
                        if self.progress:
                            self.progress("adding", s + len(X), n)
                        block = next(blocks, None)
                    held.start()  # the commit and its count go together
                self.committed += written
                counts = {c: counts[c] + pending[c] for c in counts}
        return counts

    def _write(self, w: Any, keys: Any, X: Any, first: int, pending: dict[str, int]) -> None:
        try:
            if self.mode == "upsert":
                replaced = w.upsert(keys, X)
                pending["replaced"] += replaced
                pending["added"] += len(X) - replaced
            else:
                added = w.add(keys, X, skip_existing=self.mode == "skip")
                pending["added"] += added
                pending["skipped"] += len(X) - added
        except InvalidVectorError as exc:  # its row numbers count from the block's
            raise exc.in_input(first) from None


class _HeldInterrupt:
    """From :meth:`start` to the end of the block, a Ctrl-C (SIGINT) waits for the end
    (in the main thread; elsewhere Python delivers no signals)."""

    def __init__(self) -> None:
        self._old: Any = None
        self._held = False
        self._started = False

    def __enter__(self) -> _HeldInterrupt:
        return self

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._hold)
            self._started = True

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self._held = True

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            signal.signal(signal.SIGINT, self._old if self._old is not None else signal.SIG_DFL)
            if self._held and exc[0] is None:
                raise KeyboardInterrupt

