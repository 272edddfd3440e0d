"""What an index takes from a file: vectors, or documents and token sets for jaccard.

:func:`open_items` gives a source shaped like :class:`~lshdb.io.inputs.VectorSource`
(``len``, ``keys``, ``blocks()``) for any index's metric, and :func:`key_field_of` finds the
key field of a JSON-lines file when none is named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import InputFormatError
from ..metrics import metric_class
from ..storage.codec import Key
from ..storage.streams import is_stream
from .inputs import VectorSource, open_vectors
from .jsonl import KEY_FIELDS, iter_lines, json_error, pick_key_field, read_jsonl_docs

__all__ = ["ItemSource", "open_items", "read_token_sets", "key_field_of"]

_JSON_LINES = (".jsonl", ".json", ".ndjson")
_VECTOR_FILES = (".npy", ".fvecs", ".bvecs", ".ivecs")


class ItemSource:
    """Documents or token sets from JSON lines: ``len``, ``keys`` and ``blocks()``."""

    def __init__(self, path: str, key_field: str | None, text_field: str | None,
                 tokens_field: str | None) -> None:
        self.keys: Sequence[Key]
        self.items: Sequence[Any]
        if text_field:
            self.keys, self.items = read_jsonl_docs(path, key_field, text_field)
        else:
            self.keys, self.items = read_token_sets(path, key_field, tokens_field or "tokens")

    def __len__(self) -> int:
        return len(self.items)

    def blocks(self, size: int = 65536) -> Iterator[tuple[int, Sequence[Any]]]:
        for s in range(0, len(self.items), size):
            yield s, self.items[s : s + size]


def read_token_sets(path: str, key_field: str | None, field: str
                    ) -> tuple[list[Key], list[list[Any]]]:
    """Keys and token lists from JSON lines (``key_field=None``: line numbers as keys)."""
    keys: list[Key] = []
    items: list[list[Any]] = []
    for lineno, raw in iter_lines(path):
        try:
            obj = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{lineno}: not valid JSON ({json_error(exc)})") from exc
        if not isinstance(obj, dict) or field not in obj or (
                key_field is not None and key_field not in obj):
            needs = field if key_field is None else f"{key_field!r} and {field!r}"
            raise InputFormatError(f"{path}:{lineno}: needs the field(s) {needs}")
        if not isinstance(obj[field], list):
            raise InputFormatError(f"{path}:{lineno}: {field!r} must be a list of tokens")
        keys.append(lineno if key_field is None else obj[key_field])
        items.append(obj[field])
    return keys, items


def open_items(metric: str, path: str, key_field: str | None = "key",
               vector_field: str = "vector", text_field: str | None = None,
               tokens_field: str | None = None) -> VectorSource | ItemSource:
    """The items of ``path`` for an index of ``metric``: vectors for a dense metric;
    documents (``text_field``, by default ``text``) or token sets (``tokens_field``) from
    JSON lines for jaccard."""
    is_set = metric_class(metric).is_set
    if not (is_set or text_field or tokens_field):
        return open_vectors(path, key_field, vector_field)
    if not is_set:
        raise InputFormatError("text_field and tokens_field apply to jaccard indexes")
    if not text_field and not tokens_field:
        text_field = "text"
    ext = os.path.splitext(path)[1].lower()
    if ext in _VECTOR_FILES:
        raise InputFormatError(
            f"{path} holds vectors ({ext}); a jaccard index takes documents or token sets "
            "from JSON lines (.jsonl), one per line")
    return ItemSource(path, key_field, text_field, tokens_field)


def key_field_of(path: str, key_field: str | None = None, jsonl: bool = False,
                 stream_default: str = "key") -> tuple[str, bool]:
    """The key field of an input, and whether it was found in the file (not named).

    The one named, else ``key`` or ``id``, whichever the first record of a JSON-lines file
    holds (``jsonl``: whatever its extension). A stream cannot be read twice: it gets
    ``stream_default``; other formats hold no key field and get ``key``."""
    if key_field is not None:
        return key_field, False
    if is_stream(path):
        return stream_default, False
    is_jsonl = jsonl or os.path.splitext(path)[1].lower() in _JSON_LINES
    if not is_jsonl or not os.path.isfile(path):
        return "key", False
    used, fields = pick_key_field(path, KEY_FIELDS)
    if used is None:
        raise InputFormatError(
            f"{path}: the first record has no {' or '.join(map(repr, KEY_FIELDS))} field "
            f"(fields: {', '.join(map(repr, fields[:8]))}); name the key field with --key-field")
    return used, True
