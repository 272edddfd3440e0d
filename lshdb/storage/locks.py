"""The index-wide write lock: ``flock`` on the index's lock file plus a thread lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable

from ..errors import LockTimeoutError, LshdbError

__all__ = ["WriterLock", "try_lock"]


class WriterLock:
    """The index-wide write lock: ``flock`` on ``writer.lock`` plus a thread lock.

    ``flock`` excludes other processes and other open handles; the thread lock excludes
    other threads sharing this handle. ``timeout=None`` waits forever.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd = -1
        self._owner: int | None = None  # the thread holding it

    def held_here(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def acquire(self, timeout: float | None,
                on_wait: Callable[[], None] | None = None) -> None:
        """Take the lock, waiting up to ``timeout`` s; ``on_wait()`` is called once, before
        waiting, when another thread or process holds it (to tell a person why)."""
        if self.held_here():  # waiting would wait for itself forever
            raise LshdbError(
                f"this thread already holds the write lock of {os.path.dirname(self.path)} "
                "(a `with index.writer() as w` block is open): write through `w` (w.add, "
                "w.upsert, w.delete) or finish that block first")
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        if not self._thread_lock.acquire(blocking=False):
            waited = True
            if on_wait is not None:
                on_wait()
            if not self._thread_lock.acquire(
                    timeout=-1 if timeout is None else max(timeout, 0)):
                raise LockTimeoutError(
                    f"another thread held the write lock of {os.path.dirname(self.path)} "
                    f"for {timeout} s; retry later or raise timeout=")
        fd = -1
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        waited = True
                        if on_wait is not None:
                            on_wait()
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeoutError(
                            f"another writer held the write lock of "
                            f"{os.path.dirname(self.path)} for {timeout} s; retry later or "
                            "raise timeout=") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
            self._fd = fd
            self._owner = threading.get_ident()
        except BaseException:
            if fd >= 0 and self._fd != fd:
                os.close(fd)
            self._thread_lock.release()
            raise

    def release(self) -> None:
        self._owner = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()


def try_lock(path: str) -> int:
    """A descriptor holding the write lock, or -1 if a writer holds it (never waits)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd
