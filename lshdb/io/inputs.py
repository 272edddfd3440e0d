"""Reading vectors and keys from files: ``.npy``, ``.fvecs``/``.bvecs``/``.ivecs``, JSON lines.

The ``*vecs`` formats (the ANN-benchmark corpora) store each vector as a little-endian int32
dimension followed by that many float32 / uint8 / int32 values. JSON lines hold one object
per line with a key field and a vector field. A keys file holds one key per line: a line that
is a canonical decimal integer (``42``, ``-7``; not ``007``) is an int key, any other line a
str key; a ``.jsonl`` keys file holds one JSON value (string or integer) per line, and a
``.npy`` keys file an integer or string array.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import InputFormatError
from ..storage.codec import Key
from ..storage.streams import display, is_stdio, is_stream, open_input
from .jsonl import _lines, iter_lines

__all__ = ["VectorSource", "open_vectors", "read_keys", "FORMATS"]

FORMATS = (".npy", ".fvecs", ".bvecs", ".ivecs", ".jsonl", ".json", ".ndjson")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


class VectorSource:
    """Vectors in a file, read in blocks: ``len(source)``, ``source.dim``, ``source.blocks()``."""

    def __init__(self, path: str, key_field: str | None = "key",
                 vector_field: str = "vector") -> None:
        self.path = path
        self.key_field = key_field
        self.vector_field = vector_field
        stream = is_stream(path)
        name = display(path)
        if not stream and not os.path.isfile(path):
            raise InputFormatError(f"input file {path} does not exist")
        ext = "" if is_stdio(path) else os.path.splitext(path)[1].lower()
        data = None
        if stream:  # read once, whole: a pipe cannot be mapped or read twice
            with open_input(path) as f:
                data = f.read()
            if ext not in FORMATS:
                ext = _sniff(data, name)
        if ext not in FORMATS:
            raise InputFormatError(
                f"{path}: unknown input format {ext or '(no extension)'!r}; use one of "
                f"{', '.join(FORMATS)}")
        self.ext = ext
        self._keys: list[Key] | None = None
        if ext == ".npy":
            try:
                self._array = (np.load(io.BytesIO(data), allow_pickle=False) if data is not None
                               else np.load(path, mmap_mode="r", allow_pickle=False))
            except ValueError as exc:
                raise InputFormatError(f"{name} is not a readable .npy array: {exc}") from exc
            if self._array.ndim != 2:
                raise InputFormatError(f"{name} holds a {self._array.ndim}-D array; expected 2-D (n, dim)")
        elif ext in (".fvecs", ".bvecs", ".ivecs"):
            raw = (np.frombuffer(data, dtype=np.uint8) if data is not None
                   else np.fromfile(path, dtype=np.uint8))
            self._array = _read_vecs(raw, name, ext)
        else:
            lines = iter_lines(path) if data is None else _lines(io.BytesIO(data))
            self._keys, self._array = _read_jsonl(lines, name, key_field, vector_field)

    @property
    def keys(self) -> list[Key] | None:
        """Keys read from the file itself (JSON lines), else None."""
        return self._keys

    def __len__(self) -> int:
        return int(self._array.shape[0])

    @property
    def dim(self) -> int:
        return int(self._array.shape[1])

    def blocks(self, size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, len(self), size):
            yield s, np.asarray(self._array[s : s + size])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows ``idx`` (ascending): of a ``.npy`` file, read from its memory map (only
        the pages that hold them)."""
        return np.asarray(self._array[idx])

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` rows drawn at random (seeded; in file order), or all rows if there are
        fewer: a file's first rows may all come from one part of the data."""
        if n >= len(self):
            return np.asarray(self._array)
        pick = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return np.asarray(self._array[pick])


def open_vectors(path: str, key_field: str | None = "key",
                 vector_field: str = "vector") -> VectorSource:
    """The vectors of a file; ``key_field=None`` reads JSON lines without keys (queries).

    ``-`` reads standard input, and a path that is not a regular file (a pipe, process
    substitution) is read as a stream; a stream's format is its name's extension, else
    ``.npy`` by its magic bytes or JSON lines by a leading ``{``."""
    return VectorSource(path, key_field, vector_field)


def _sniff(data: bytes, name: str) -> str:
    if data.startswith(b"\x93NUMPY"):
        return ".npy"
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return ".jsonl"
    raise InputFormatError(
        f"cannot tell the format of {name}: a stream is read as .npy (by its magic bytes) or "
        "JSON lines; give .fvecs, .bvecs or .ivecs input as a file")


def _read_vecs(raw: np.ndarray, path: str, ext: str) -> np.ndarray:
    if len(raw) < 4:
        raise InputFormatError(f"{path} is empty or shorter than one {ext} header")
    dim = int(raw[:4].view("<i4")[0])
    item = {".fvecs": 4, ".bvecs": 1, ".ivecs": 4}[ext]
    rec = 4 + dim * item
    if dim <= 0 or len(raw) % rec:
        raise InputFormatError(
            f"{path}: {len(raw)} bytes is not a whole number of {ext} records of dimension {dim}")
    table = raw.reshape(-1, rec)
    dims = table[:, :4].copy().view("<i4")[:, 0]
    if (dims != dim).any():
        bad = int(np.flatnonzero(dims != dim)[0])
        raise InputFormatError(f"{path}: record {bad} has dimension {int(dims[bad])}, not {dim}")
    body = np.ascontiguousarray(table[:, 4:])
    dtype = np.dtype({".fvecs": "<f4", ".bvecs": "u1", ".ivecs": "<i4"}[ext])
    return body.view(dtype).reshape(len(table), dim)


def _read_jsonl(lines: Iterable[tuple[int, bytes]], path: str, key_field: str | None,
                vector_field: str) -> tuple[list[Key] | None, np.ndarray]:
    keys: list[Key] = []
    rows: list[Any] = []
    linenos: list[int] = []
    for lineno, line in lines:  # (blank lines and a byte order mark dropped)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
        if not isinstance(obj, dict) or vector_field not in obj:
            raise InputFormatError(f"{path}:{lineno}: no {vector_field!r} field")
        rows.append(obj[vector_field])
        linenos.append(lineno)
        if key_field is None:
            continue
        if key_field not in obj:
            raise InputFormatError(f"{path}:{lineno}: no {key_field!r} field")
        key = obj[key_field]
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise InputFormatError(f"{path}:{lineno}: the key must be a string or an integer")
        keys.append(key)
    if not rows:
        raise InputFormatError(f"{path} holds no records")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        for i, r in enumerate(rows):  # a value that is no number is a type problem
            bad = next((v for v in r if isinstance(v, (str, bool, list, dict)) or v is None),
                       0) if isinstance(r, list) else r
            if not isinstance(bad, (int, float)) or isinstance(bad, bool):
                raise InputFormatError(
                    f"{path}:{linenos[i]}: {vector_field!r} holds a "
                    f"{type(bad).__name__} ({bad!r:.20}); vectors are lists of numbers"
                ) from exc
        lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
        raise InputFormatError(
            f"{path}: vectors must be lists of numbers of one length; found lengths "
            f"{sorted(lengths)[:5]}") from exc
    if arr.ndim != 2:
        raise InputFormatError(f"{path}: vectors must be flat lists of numbers")
    return (None if key_field is None else keys), arr


def read_keys(path: str) -> list[Key]:
    """Keys from a file (see the module docstring for the rules); ``-`` reads them, one per
    line, from standard input."""
    if not is_stream(path) and not os.path.isfile(path):
        raise InputFormatError(f"keys file {path} does not exist")
    ext = "" if is_stdio(path) else os.path.splitext(path)[1].lower()
    with open_input(path) as fb:
        data = fb.read()
    name = display(path)
    if ext == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InputFormatError(f"{name} is not a readable .npy array: {exc}") from exc
        if arr.ndim != 1 or arr.dtype.kind not in "iuU":
            raise InputFormatError(f"{name}: expected a 1-D integer or string array")
        return arr.tolist()  # type: ignore[no-any-return]
    keys: list[Key] = []
    try:
        text_all = data.decode("utf-8-sig")  # (a leading byte order mark is dropped)
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{name}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                               ) from None
    for lineno, line in enumerate(io.StringIO(text_all, newline=None), 1):
        text = line.rstrip("\n").rstrip("\r")
        if ext in (".jsonl", ".json", ".ndjson"):
            if not text.strip():
                continue
            try:
                v = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputFormatError(f"{name}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise InputFormatError(f"{name}:{lineno}: a key must be a string or an integer")
            keys.append(v)
        else:
            if text == "":
                continue
            keys.append(int(text) if _INT.match(text) else text)
    return keys
