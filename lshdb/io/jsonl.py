"""JSON-lines documents: reading with line-numbered errors, and atomic result files.

:func:`read_jsonl_docs` reads ``{"id": ..., "text": ...}`` lines as bytes and decodes and
parses one line at a time, so any bad line (not UTF-8, not JSON, a missing field, a text
that is not a string, a repeated key) is an :class:`~lshdb.errors.InputFormatError` naming
``path:line``; nothing is skipped silently except blank lines. Results are written with
:func:`lshdb.storage.streams.open_output`: a regular file atomically (a temporary name beside it,
fsynced, renamed into place), ``-`` and other streams in place.

Thread safety: functions share no state.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import InputFormatError
from ..storage.streams import atomic_write, display, open_input, open_output

__all__ = ["Key", "KEY_FIELDS", "iter_lines", "pick_key_field", "read_jsonl_docs",
           "atomic_write", "write_jsonl", "copy_lines"]

Key = str | int
# the key field of a file that does not name one: the first of these its first record has
KEY_FIELDS = ("key", "id")


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every line that is not blank; a UTF-8 byte order mark
    opening the file is dropped. ``-`` reads standard input."""
    with open_input(path) as f:
        yield from _lines(f)


def _lines(f: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for lineno, raw in enumerate(f, start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        if raw.strip():
            yield lineno, raw


def json_error(exc: json.JSONDecodeError) -> str:
    """What is wrong and at which column (json's messages may end in "at" already)."""
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} column {exc.colno}"


def pick_key_field(path: str | os.PathLike[str],
                   candidates: tuple[str, ...] = KEY_FIELDS) -> tuple[str | None, list[str]]:
    """The first of ``candidates`` that the file's first record holds (None if none does),
    and that record's fields. A first line that is not a JSON object gives the first
    candidate: reading the file then reports the line."""
    for _, raw in iter_lines(path):
        try:
            obj = json.loads(raw)
        except ValueError:
            return candidates[0], []
        if not isinstance(obj, dict):
            return candidates[0], []
        return next((c for c in candidates if c in obj), None), list(obj)
    return candidates[0], []


def _parse(path: Any, lineno: int, raw: bytes, key_field: str | None, text_field: str
           ) -> tuple[Key, str]:
    where = f"{display(path)}:{lineno}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{where}: not valid UTF-8 (byte {exc.start} of the line: "
                               f"{raw[exc.start:exc.start + 4]!r}); re-encode the file as UTF-8"
                               ) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFormatError(f"{where}: not valid JSON ({json_error(exc)})") from None
    if not isinstance(obj, dict):
        raise InputFormatError(f"{where}: expected a JSON object; found {type(obj).__name__}")
    for name in (key_field, text_field):
        if name is not None and name not in obj:
            raise InputFormatError(f"{where}: no {name!r} field (fields: "
                                   f"{', '.join(map(repr, list(obj)[:8]))})")
    key, text = (lineno if key_field is None else obj[key_field]), obj[text_field]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise InputFormatError(f"{where}: field {key_field!r} must be a string or an integer; "
                               f"found {type(key).__name__}")
    if not isinstance(text, str):
        raise InputFormatError(f"{where}: field {text_field!r} must be a string; found "
                               f"{type(text).__name__}")
    return key, text


def read_jsonl_docs(path: str | os.PathLike[str], key_field: str | None = "id",
                    text_field: str = "text") -> tuple[list[Key], list[str]]:
    """Read a JSON-lines file of documents.

    Each non-blank line must be a UTF-8 JSON object with a string or integer key field and
    a string text field; blank lines are ignored; ``-`` reads standard input. ``key_field=None`` reads no keys (the
    line numbers stand in for them). Lines are read as bytes and decoded one
    at a time, so a bad byte sequence is reported with its line number.

    Returns
    -------
    keys, texts : lists in file order

    Raises
    ------
    InputFormatError
        A line that is not UTF-8, not JSON, not an object, lacks a field, has a text that
        is not a string or a key that is not a string or integer, or repeats an earlier
        key; the message starts with ``path:line``.
    FileNotFoundError
        No such file.
    """
    keys: list[Key] = []
    texts: list[str] = []
    seen: dict[Key, int] = {}
    for lineno, raw in iter_lines(path):
        key, text = _parse(path, lineno, raw, key_field, text_field)
        first = seen.setdefault(key, lineno)
        if first != lineno:
            raise InputFormatError(f"{display(path)}:{lineno}: key {key!r} repeats line "
                                   f"{first}; keys must be unique")
        keys.append(key)
        texts.append(text)
    return keys, texts


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line (UTF-8); returns the number of lines.

    A regular file is written atomically; ``-`` is standard output, and a path that is not
    a regular file (``/dev/stdout``, a FIFO) is written in place (:mod:`lshdb.storage.streams`)."""
    count = 0
    with open_output(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def copy_lines(src: str | os.PathLike[str], dst: str | os.PathLike[str], mask: np.ndarray,
               keys: list[Key], key_field: str = "id") -> int:
    """Copy the original lines of the documents selected by ``mask``, in input order.

    ``src`` must still hold exactly the documents ``keys`` (checked line by line); returns
    the number of lines written.

    Raises
    ------
    InputFormatError
        ``src`` no longer holds those documents (the file changed since it was read).
    """
    written, i = 0, -1
    with open_output(dst, binary=True) as out:
        for i, (lineno, raw) in enumerate(iter_lines(src)):
            if i >= len(mask):
                raise InputFormatError(f"{os.fspath(src)}:{lineno}: more documents than the "
                                       f"{len(mask)} expected; the file changed")
            try:
                key = json.loads(raw)[key_field]
            except (ValueError, KeyError, TypeError):
                key = None
            if key != keys[i]:
                raise InputFormatError(f"{os.fspath(src)}:{lineno}: expected key "
                                       f"{keys[i]!r}; the file changed since it was read")
            if mask[i]:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                written += 1
        if i + 1 != len(mask):
            raise InputFormatError(f"{os.fspath(src)}: {i + 1} documents, but {len(mask)} "
                                   "were expected; the file changed")
    return written
