"""Dedup of JSON-lines files: read the documents, run :func:`lshdb.text.dedup.dedup`, and
write the pairs, clusters and kept lines; or match them against a jaccard index."""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

from ..errors import InputFormatError, InvalidParameterError
from ..hashing.shingles import parse_shingle
from ..index.index import open as open_index
from ..io.jsonl import copy_lines, read_jsonl_docs, write_jsonl
from ..storage.streams import is_stream
from .dedup import KEEP, DedupResult, Progress, check_options, dedup

__all__ = ["dedup_jsonl", "dedup_against_jsonl", "write_pairs", "write_clusters",
           "write_kept"]


def write_pairs(result: DedupResult, path: str | os.PathLike[str]) -> int:
    """Write ``{"a": key, "b": key, "jaccard": x}`` lines, each pair once; returns the count."""
    return write_jsonl(path, ({"a": a, "b": b, "jaccard": j} for a, b, j in result.pairs()))


def write_clusters(result: DedupResult, path: str | os.PathLike[str]) -> int:
    """Write ``{"cluster": c, "size": m, "keys": [...]}`` lines for clusters of two or more."""
    keys = result.keys
    return write_jsonl(path, ({"cluster": c, "size": len(m), "keys": [keys[i] for i in m.tolist()]}
                              for c, m in enumerate(result.clusters)))


def write_kept(result: DedupResult, src: str | os.PathLike[str],
               dst: str | os.PathLike[str], keep: str = "first", key_field: str = "id") -> int:
    """Copy the kept documents' original lines from ``src`` to ``dst``, in input order.

    ``keep`` picks one document per cluster (``"first"`` or ``"longest"``); documents in no
    cluster (empty ones included) are all kept. Returns the number of lines written.

    Raises
    ------
    InputFormatError
        ``src`` no longer holds the documents the result was computed from.
    """
    return copy_lines(src, dst, result.kept(keep), result.keys, key_field)


def dedup_jsonl(path: str | os.PathLike[str], *, key_field: str = "id", text_field: str = "text",
                pairs: str | os.PathLike[str] | None = None,
                clusters: str | os.PathLike[str] | None = None,
                output: str | os.PathLike[str] | None = None, keep: str = "first",
                progress: Progress | None = None, **options: Any) -> DedupResult:
    """Read a JSON-lines file, deduplicate it, and write whichever outputs are named.

    ``path`` may be ``-`` (standard input) unless ``output`` is given (the kept lines are
    copied from a second reading); an output may be ``-`` (standard output) or a stream
    such as a FIFO, written in place; regular files are written atomically.

    ``options`` go to :func:`dedup` (unknown names raise ``InvalidParameterError``).
    """
    allowed = {"threshold", "shingle", "num_perm", "verify", "mode", "seed", "bands",
               "fp_weight", "fn_weight"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidParameterError(f"unknown dedup option(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(allowed))}")
    if output is not None and is_stream(path):
        raise InvalidParameterError(
            "writing the kept documents reads the input twice; give it as a file, not "
            "standard input or a pipe")
    if keep not in KEEP:
        raise InvalidParameterError(f"keep must be 'first' or 'longest'; found {keep!r}")
    # bad options and unwritable outputs fail now, not after the work
    defaults = inspect.signature(dedup).parameters
    opt = {name: options.get(name, defaults[name].default)
           for name in ("threshold", "num_perm", "verify", "mode", "bands", "shingle")}
    check_options(opt["threshold"], opt["num_perm"], opt["verify"], opt["mode"], opt["bands"])
    parse_shingle(opt["shingle"])
    for target in (pairs, clusters, output):
        if target is None or is_stream(target):
            continue
        folder = os.path.dirname(os.path.abspath(target))
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise InvalidParameterError(f"cannot write {os.fspath(target)}: its folder "
                                        "does not exist or is not writable")
    t0 = time.perf_counter()
    if progress:
        progress("read", 0, 1)
    keys, texts = read_jsonl_docs(path, key_field, text_field)
    if progress:
        progress("read", 1, 1)
    read_seconds = time.perf_counter() - t0
    result = dedup(keys, texts, progress=progress, **options)
    seconds = result.stats["seconds"]
    result.stats["seconds"] = {"read": round(read_seconds, 4), **seconds,
                               "total": round(seconds["total"] + read_seconds, 4)}
    if pairs is not None:
        write_pairs(result, pairs)
    if clusters is not None:
        write_clusters(result, clusters)
    if output is not None:
        write_kept(result, path, output, keep, key_field)
    return result


def dedup_against_jsonl(path: str | os.PathLike[str], index_path: str | os.PathLike[str],
                        pairs: str | os.PathLike[str], *, threshold: float,
                        key_field: str = "id", text_field: str = "text", exact: bool = True,
                        progress: Progress | None = None) -> dict[str, Any]:
    """Match every document of a JSON-lines file against a jaccard index: the pairs
    ``{"a": document key, "b": indexed key, "jaccard": x}`` with ``x >= threshold`` go to
    ``pairs`` (a file, ``-`` or a stream); returns a summary. ``exact=False`` scores by
    signatures (the index's stored token hashes are not read)."""
    keys, texts = read_jsonl_docs(path, key_field, text_field)
    t0 = time.perf_counter()
    with open_index(index_path, readonly=True) as index:
        if not index.metric.is_set:
            raise InputFormatError(f"{os.fspath(index_path)} is a {index.metric.name} index, "
                                   "not jaccard")
        with index.reader() as r:
            def found() -> Any:
                for i, (key, text) in enumerate(zip(keys, texts)):
                    for other, score in r.query(text, k=None, threshold=threshold,
                                                exact=None if exact else False):
                        yield {"a": key, "b": other, "jaccard": float(score)}
                    if progress:
                        progress("matching", i + 1, len(texts))
            n_pairs = write_jsonl(pairs, found())
    return {"documents": len(texts), "pairs": n_pairs,
            "seconds": round(time.perf_counter() - t0, 3)}
