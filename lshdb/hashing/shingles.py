"""Shingling (word and character n-grams) and stable 64-bit shingle hashing, in bulk.

The definition
--------------
A text is normalised by ``str.lower()`` and split into words by ``str.split()`` (runs of
Unicode whitespace, exactly the characters for which ``str.isspace()`` is true).

``word:N``  the set of word N-grams, each written as its N words joined by one space
            (``" ".join(words[i:i + N])``). A text of fewer than N words (but at least one)
            is the set of its single words. This is the ground truth of the benchmarks
            (``words = text.lower().split()``, tuples of N words or single words).
``char:N``  the set of N-character substrings (code points, not bytes) of the normalised
            text ``" ".join(text.lower().split())``: whitespace runs collapsed to one space,
            leading and trailing whitespace dropped. A normalised text shorter than N
            characters (but not empty) is the one-element set of itself.

A text without words has the empty shingle set under both kinds. :func:`word_shingles` and
:func:`char_shingles` compute these sets in plain Python: they are the reference that the
bulk code is tested against.

The hashes
----------
:func:`shingle_hashes` computes, for many texts at once, the distinct 64-bit hashes of each
text's shingles in CSR form (``hashes[offsets[i]:offsets[i + 1]]``, sorted ascending), with
numpy over the raw bytes and no Python object per shingle. The texts are encoded (UTF-8, lone
surrogates passed through) and joined in blocks of about 256 kB; ``str.lower()`` runs only on
the non-ASCII texts that need it, ASCII letters are lowered in the joined bytes. Word
boundaries are found with vectorised byte tests (the Unicode spaces as UTF-8 sequences), and a
shingle's hash is that of its string as defined above (UTF-8 bytes): a polynomial
``sum(b_k * B**k)`` modulo 2**64 with a fixed odd 64-bit ``B``, finalised with splitmix64
together with the string's length and the seed. The polynomial of any span is read off prefix sums in O(1): over
the bytes for a character n-gram (of a buffer whose whitespace runs are collapsed), and over
the words for a word n-gram (each word's polynomial, read off the byte prefix sums, shifted to
where it sits in ``" ".join(words)``, so the joined string is never built). Each text's hashes
are then sorted and deduplicated with one sort per block of texts.

The same shingle string has the same hash in every text, run and machine (no Python
``hash()``; :func:`hash_strings` computes it for any string), so the exact Jaccard similarity
of two hash sets equals that of the shingle sets unless two distinct shingles collide (about
``m**2 / 2**65`` for ``m`` distinct shingles; polynomial hashing modulo 2**64 is not
collision-resistant against crafted inputs, only against ordinary text).

Thread safety: every function is pure apart from module caches (the power tables, and the
table of characters that ``str.lower()`` changes), each only ever replaced whole; concurrent
calls are safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError
from .bytehash import (
    block_spans,
    blocks,
    distinct_per_doc,
    encode,
    iter_blocks,
    span_hashes,
    word_block_hashes,
)
from .jaccard import JaccardOracle, exact_jaccard, pair_jaccard

__all__ = [
    "MAX_WORD_N",
    "MAX_CHAR_N",
    "normalize",
    "word_shingles",
    "char_shingles",
    "parse_shingle",
    "shingle_hashes",
    "shingle_token_hashes",
    "hash_strings",
    "exact_jaccard",
    "JaccardOracle",
    "pair_jaccard",
]

MAX_WORD_N = 64
MAX_CHAR_N = 256
_KINDS = {"word": 5, "char": 4}  # kind -> default n
_U64 = np.uint64


# -- the reference definition ----------------------------------------------------------


def normalize(text: str) -> str:
    """The normalised text: lowered, whitespace runs collapsed to one space, stripped."""
    return " ".join(text.lower().split())


def word_shingles(text: str, n: int = 5) -> set[str]:
    """The word n-grams of ``text`` as strings (reference implementation, plain Python)."""
    words = text.lower().split()
    if len(words) < n:
        return set(words)
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def char_shingles(text: str, n: int = 4) -> set[str]:
    """The character n-grams of the normalised text (reference implementation)."""
    s = normalize(text)
    if len(s) < n:
        return {s} if s else set()
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def parse_shingle(spec: str | tuple[str, int]) -> tuple[str, int]:
    """Parse a shingle spec such as ``"word:5"`` or ``"char:4"`` into ``(kind, n)``.

    A bare ``"word"`` or ``"char"`` takes the default size (5 words, 4 characters).

    Raises
    ------
    InvalidParameterError
        An unknown kind, a size that is not an integer, or a size outside 1..64 (words)
        or 1..256 (characters).
    """
    if isinstance(spec, tuple):
        kind, n = spec
    elif isinstance(spec, str):
        kind, sep, size = spec.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in _KINDS:
            raise InvalidParameterError(
                f"shingle kind must be 'word' or 'char' (e.g. 'word:5'); found {spec!r}")
        if not sep:
            return kind, _KINDS[kind]
        try:
            n = int(size)
        except ValueError:
            raise InvalidParameterError(
                f"shingle size must be an integer (e.g. 'word:5'); found {spec!r}") from None
    else:
        raise InvalidParameterError(f"shingle spec must be a string like 'word:5'; found {spec!r}")
    if kind not in _KINDS:
        raise InvalidParameterError(f"shingle kind must be 'word' or 'char'; found {kind!r}")
    limit = MAX_WORD_N if kind == "word" else MAX_CHAR_N
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
        raise InvalidParameterError(f"{kind} shingle size must be 1..{limit}; found {n!r}")
    return kind, int(n)


def _check_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidVectorError("texts must be a sequence of str, not one str")
    return list(texts)


def shingle_hashes(texts: Iterable[str], kind: str = "word", n: int = 5, seed: int = 0,
                   distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Distinct 64-bit shingle hashes of many texts, in CSR form.

    Parameters
    ----------
    texts : sequence of str
        The documents.
    kind : {"word", "char"}
        Word or character n-grams (see the module docstring for the exact definition).
        A spec string such as ``"word:5"`` is also accepted here, in which case ``n`` is
        ignored.
    n : int
        Words (1..64) or characters (1..256) per shingle.
    seed : int
        Keys the hash; the same seed gives the same hashes everywhere.
    distinct : bool
        Sort and deduplicate each text's hashes (the default). ``False`` skips that step
        and returns one hash per shingle occurrence in text order, repeats included: enough
        for MinHash signatures, which ignore repeats, and about a quarter faster.

    Returns
    -------
    offsets : (len(texts) + 1,) int64
    hashes : (offsets[-1],) uint64
        ``hashes[offsets[i]:offsets[i + 1]]`` are the distinct hashes of text i's shingles,
        sorted ascending. A text without words has none (its slice is empty).

    Raises
    ------
    InvalidParameterError
        An unknown kind or an out-of-range n.
    InvalidVectorError
        An element of ``texts`` that is not a str.
    """
    kind, n = parse_shingle(kind if ":" in str(kind) else (kind, n))
    texts = _check_texts(texts)
    counts, parts = [np.zeros(0, np.int64)], [np.zeros(0, _U64)]
    encoded, lengths = encode(texts)
    for lo, hi in blocks(lengths):
        if kind == "word":
            c, h = word_block_hashes(encoded[lo:hi], lengths[lo:hi], n, seed)
            if distinct:
                c, h = distinct_per_doc(np.repeat(np.arange(hi - lo), c), h, hi - lo)
        else:
            buf, doc, starts, ends = block_spans(encoded[lo:hi], kind, n)
            h = span_hashes(buf, starts, ends, seed)
            if distinct:
                c, h = distinct_per_doc(doc, h, hi - lo)
            else:
                c = np.bincount(doc, minlength=hi - lo)
        counts.append(c)
        parts.append(h)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=offsets[1:])
    return offsets, np.concatenate(parts)


def shingle_token_hashes(texts: Iterable[str], kind: str = "word", n: int = 5,
                         width: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's SHA-1 token hashes of each text's distinct shingles, in CSR form.

    Each shingle string (as defined in the module docstring) is encoded as UTF-8 and hashed
    like ``datasketch.hashfunc.sha1_hash32`` (``width=32``: the first 4 bytes of the SHA-1
    digest, little-endian) or ``sha1_hash64`` (``width=64``). Feeding these values to
    :func:`lshdb.hashing.minhash.classic_signatures` gives the signatures datasketch gives for
    ``[s.encode("utf-8") for s in word_shingles(text, n)]``. Each distinct shingle of the
    corpus is hashed once (a Python call per distinct shingle: this is the slow,
    compatible path).

    Returns
    -------
    offsets : (len(texts) + 1,) int64
    hashes : uint32 (width 32) or uint64 (width 64), one per distinct shingle of each text.
    """
    if width not in (32, 64):
        raise InvalidParameterError(f"width must be 32 or 64; found {width!r}")
    kind, n = parse_shingle(kind if ":" in str(kind) else (kind, n))
    texts = _check_texts(texts)
    dtype, size = (np.dtype("<u4"), 4) if width == 32 else (np.dtype("<u8"), 8)
    counts, parts = [np.zeros(0, np.int64)], [np.zeros(0, dtype.newbyteorder("="))]
    sha1 = hashlib.sha1
    for lo, hi, (buf, doc, starts, ends) in iter_blocks(texts, kind, n):
        h = span_hashes(buf, starts, ends, 0)
        c, hd = distinct_per_doc(doc, h, hi - lo)
        uniq, first = np.unique(h, return_index=True)
        mv = memoryview(buf.tobytes())
        digests = b"".join([sha1(mv[s:e]).digest()[:size]
                            for s, e in zip(starts[first].tolist(), ends[first].tolist())])
        tok = np.frombuffer(digests, dtype=dtype).astype(np.uint32 if width == 32 else _U64)
        counts.append(c)
        parts.append(tok[np.searchsorted(uniq, hd)])
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=offsets[1:])
    return offsets, np.concatenate(parts)


def hash_strings(strings: Iterable[str], seed: int = 0) -> np.ndarray:
    """The 64-bit hash of each string's UTF-8 bytes, exactly as a shingle is hashed.

    ``hash_strings(word_shingles(t, n))`` is the set ``shingle_hashes([t], "word", n)``
    holds (likewise for characters). No normalisation is applied to the strings.

    Returns
    -------
    (len(strings),) uint64
    """
    strings = strings if isinstance(strings, list) else list(strings)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    ascii_ = np.fromiter(map(str.isascii, strings), dtype=bool, count=len(strings))
    # ASCII runs are joined and encoded at once (bytes = characters); the rest one by one
    pieces, prev = [], 0
    for i in np.flatnonzero(~ascii_).tolist():
        pieces.append("".join(strings[prev:i]).encode("ascii"))
        pieces.append(strings[i].encode("utf-8", "surrogatepass"))
        lengths[i] = len(pieces[-1])
        prev = i + 1
    pieces.append("".join(strings[prev:]).encode("ascii"))
    data = b"".join(pieces)
    everything = np.frombuffer(data, dtype=np.uint8)
    ends = np.cumsum(lengths)
    out = np.empty(len(strings), dtype=_U64)
    for lo, hi in blocks(lengths):
        first = int(ends[lo] - lengths[lo])
        e = ends[lo:hi] - first
        out[lo:hi] = span_hashes(everything[first:int(ends[hi - 1])], e - lengths[lo:hi], e, seed)
    return out
