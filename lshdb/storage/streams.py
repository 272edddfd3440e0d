"""Where command output goes and input comes from: files, streams and ``-``.

``-`` names standard output for an output and standard input for an input. A path that
exists and is not a regular file (``/dev/stdout``, a FIFO, a terminal, ``/dev/fd/N`` from
process substitution) is a stream: it is opened and written or read in place. Only regular
files are written atomically (:func:`atomic_write`: a temporary file beside the destination,
fsynced, renamed over it, the folder fsynced), so that a reader sees the old file or the
whole new one; renaming over a device path would replace the device's name with a file.
New files get the mode any other program's would (``0o666`` less the umask), not the
temporary file's ``0o600``.

Thread safety: functions share no state (:func:`file_mode` reads the umask without
changing it where ``/proc`` allows).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["STDIO", "is_stdio", "is_stream", "display", "file_mode", "atomic_write",
           "open_output", "open_input"]

STDIO = "-"


def is_stdio(path: Any) -> bool:
    """True for ``-`` (standard input or output)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path) == STDIO


def is_stream(path: Any) -> bool:
    """True for ``-`` and for an existing path that is not a regular file (a pipe, FIFO,
    character device, or a symlink to one such as ``/dev/stdout``)."""
    if is_stdio(path):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)  # follows symlinks
    except (OSError, ValueError):
        return False


def display(path: Any) -> str:
    """How messages name a path: ``standard input`` for ``-``."""
    return "standard input" if is_stdio(path) else os.fspath(path)


def file_mode() -> int:
    """The mode a new file gets: ``0o666`` less the process's umask."""
    mask = None
    try:  # Linux shows the umask; reading it this way changes nothing for other threads
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``; fsync, rename into place, fsync the folder.

    For regular files only (see the module docstring); the file gets :func:`file_mode`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, file_mode())
        f: IO[Any] = (os.fdopen(fd, mode) if "b" in mode
                      else os.fdopen(fd, mode, encoding="utf-8", newline="\n"))
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def open_output(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """An output: standard output for ``-``, the stream itself for a path that is not a
    regular file, else a regular file written atomically (:func:`atomic_write`)."""
    if is_stdio(path):
        out: IO[Any] = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
    elif is_stream(path):
        with (open(path, "wb") if binary
              else open(path, "w", encoding="utf-8", newline="\n")) as f:
            yield f
    else:
        with atomic_write(path, "wb" if binary else "w") as f:
            yield f


@contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """An input opened for reading bytes: standard input for ``-`` (left open after)."""
    if is_stdio(path):
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as f:
            yield f
