"""The index directory: CURRENT, generation folders, atomic file replacement.

The directory layout is described in docs/format.md ("The directory").
"""

from __future__ import annotations

import os
import re

from ..errors import CorruptIndexError, NotAnIndexError

__all__ = ["CURRENT", "LOCK", "gen_name", "gen_number", "read_current", "write_current",
           "fsync_dir", "temp_name", "is_temp", "is_generation", "list_generations"]

CURRENT = "CURRENT"
LOCK = "writer.lock"
_GEN = re.compile(r"^g(\d{6})$")
_TEMP_PREFIX = ".tmp-"


def gen_name(n: int) -> str:
    return f"g{n:06d}"


def gen_number(name: str) -> int:
    m = _GEN.match(name)
    if not m:
        raise CorruptIndexError(f"{name!r} is not a generation name (gNNNNNN)")
    return int(m.group(1))


def is_generation(name: str) -> bool:
    return bool(_GEN.match(name))


def temp_name(name: str) -> str:
    return _TEMP_PREFIX + name


def is_temp(name: str) -> bool:
    return name.startswith(_TEMP_PREFIX)


def fsync_dir(path: str) -> None:
    fsync_file(path, os.O_DIRECTORY)


def fsync_file(path: str, flags: int = 0) -> None:
    """Flush a file (or, with ``os.O_DIRECTORY``, a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_current(path: str) -> str:
    """The live generation's folder name, validated; raises if ``path`` is not an index."""
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise NotAnIndexError(f"{path} is a file, not an lshdb index directory")
        raise NotAnIndexError(f"{path} does not exist; create an index with lshdb.create()")
    for _ in range(20):  # a compaction may replace CURRENT and remove the old folder meanwhile
        name = _read_current_once(path)
        if os.path.isdir(os.path.join(path, name)):
            return name
        if _read_current_once(path) == name:
            break
    raise CorruptIndexError(f"{os.path.join(path, CURRENT)} names {name}, which does not "
                            f"exist in {path}")


def _read_current_once(path: str) -> str:
    cur = os.path.join(path, CURRENT)
    if not os.path.isfile(cur):
        raise NotAnIndexError(
            f"{path} is not an lshdb index (no CURRENT file); create one with lshdb.create()"
            if not any(_GEN.match(n) for n in os.listdir(path)) else
            f"{path} has generation folders but no CURRENT file; the index is damaged: "
            "restore CURRENT with the name of the newest whole generation")
    with open(cur, "rb") as f:
        raw = f.read(64)
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if not _GEN.match(name) or raw != (name + "\n").encode():
        raise CorruptIndexError(
            f"{cur} is garbled ({raw[:20]!r}); it should hold one generation name such as "
            "g000001 followed by a newline")
    return name


def write_current(path: str, name: str) -> None:
    """Replace CURRENT atomically: write a temporary file, fsync, rename, fsync the folder."""
    tmp = os.path.join(path, CURRENT + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, (name + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(path, CURRENT))
    fsync_dir(path)


def list_generations(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if _GEN.match(n))
