"""Bulk shingle hashing over raw bytes: the numpy machinery behind
:func:`lshdb.hashing.shingles.shingle_hashes` (see that module for the definition it computes).

Texts are encoded and joined in blocks; word boundaries come from vectorised byte tests, and a
span's polynomial hash is read off prefix sums in O(1).

Thread safety: pure apart from module caches (the power tables, and the table of characters
that ``str.lower()`` changes), each only ever replaced whole; concurrent calls are safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import cast

import numpy as np

from ..bits import mix64, mix64_int
from ..errors import InvalidVectorError

__all__ = ["encode", "blocks", "block_spans", "span_hashes", "word_block_hashes",
           "distinct_per_doc", "iter_blocks"]

_BLOCK_BYTES = 1 << 18  # texts are processed in blocks of about 256 kB of UTF-8 (measured best)
_BLOCK_DOCS = 1 << 16  # ... and at most 65,536 texts (block-local doc ids fit in 16 bits)
_CACHED_POWERS = 1 << 20  # power tables up to 8 MB each are kept between calls
_LOWER_CHECK_BYTES = 1 << 14  # longer non-ASCII texts skip str.lower() when it is a no-op

# Non-ASCII code points for which str.isspace() is true (tests check this list is complete),
# as the big-endian integers of their 2- and 3-byte UTF-8 encodings (sorted).
_UNICODE_SPACES = "\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) \
    + "\u2028\u2029\u202f\u205f\u3000"
_SPACE_KEYS = {w: np.array([int.from_bytes(c.encode(), "big") for c in _UNICODE_SPACES
                            if len(c.encode()) == w], dtype=np.uint32) for w in (2, 3)}

_U64 = np.uint64
_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_LENGTH_SALT = _U64(0xD6E8FEB86659FD93)
_powers: tuple[np.ndarray, np.ndarray] = (np.ones(1, _U64), np.ones(1, _U64))
_cased: np.ndarray | None = None


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``BASE**k`` and ``BASE**-k`` modulo 2**64 for k < size.

    Tables up to ``_CACHED_POWERS`` entries are cached (grown by doubling, replaced whole);
    a larger request (a single text longer than that) is computed for the call only.
    """
    global _powers
    pw, ipw = _powers
    if len(pw) >= size:
        return pw, ipw
    m = 1 << max(16, (size - 1).bit_length())
    if m > _CACHED_POWERS:
        m = size
    pw = np.empty(m, _U64)
    ipw = np.empty(m, _U64)
    pw[0] = ipw[0] = 1
    pw[1:] = _U64(_BASE)
    ipw[1:] = _U64(_BASE_INV)
    np.cumprod(pw, out=pw)  # integer products wrap modulo 2**64
    np.cumprod(ipw, out=ipw)
    if m <= _CACHED_POWERS:
        _powers = (pw, ipw)
    return pw, ipw


def _is_space(raw: np.ndarray) -> np.ndarray:
    """ASCII whitespace by ``str.isspace()``: bytes 9-13 (\\t \\n \\v \\f \\r) and 28-32."""
    return ((raw - np.uint8(9)) <= np.uint8(4)) | ((raw - np.uint8(28)) <= np.uint8(4))


def _mark_unicode_spaces(raw: np.ndarray, sp: np.ndarray) -> None:
    """Mark every byte of the UTF-8 encodings of ``_UNICODE_SPACES`` as whitespace, in place.

    A run of marked bytes splits words and collapses to one space exactly as the code
    point would (UTF-8 is self-synchronising: no match can start inside another character).
    """
    lead = np.flatnonzero(raw[:-2] >= 0xC2)  # lead bytes of multi-byte characters
    key2 = (raw[lead].astype(np.uint32) << np.uint32(8)) | raw[lead + 1]
    key3 = (key2 << np.uint32(8)) | raw[lead + 2]
    for width, key in ((2, key2), (3, key3)):
        table = _SPACE_KEYS[width]  # sorted; searchsorted costs far less than np.isin here
        found = np.minimum(np.searchsorted(table, key), len(table) - 1)
        at = lead[table[found] == key]
        for j in range(width):
            sp[at + j] = True


def encode(texts: Sequence[str]) -> tuple[list[str | bytes], np.ndarray]:
    """The texts ready to join, and their lengths in UTF-8 bytes.

    An ASCII text stays a ``str`` (a block of them is joined and encoded at once, and
    :func:`_block_bytes` lowers their letters in bulk); any other becomes its UTF-8 bytes
    (lone surrogates passed through), lowered (see :func:`_encode_non_ascii`).
    """
    try:
        ascii_ = list(map(str.isascii, texts))
    except TypeError:  # str.isascii rejects anything that is not a str
        i = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise InvalidVectorError(
            f"text {i} must be a str; found {type(texts[i]).__name__}") from None
    items = [t if a else _encode_non_ascii(t) for t, a in zip(texts, ascii_)]
    return items, np.fromiter(map(len, items), dtype=np.int64, count=len(items))


def _encode_non_ascii(text: str) -> bytes:
    """UTF-8 of ``text.lower()``, or of ``text`` when only its ASCII letters have a lower
    case (those are lowered in bulk): ``str.lower()`` costs ~5 ns a character on
    non-ASCII strings, far more than finding out in numpy whether it is needed."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) < _LOWER_CHECK_BYTES:
        return text.lower().encode("utf-8", "surrogatepass")
    b = np.frombuffer(data, dtype=np.uint8)
    lead = np.flatnonzero(b >= 0xC0)  # the first byte of each non-ASCII character
    b0 = b[lead].astype(np.int64)
    if b0.max() >= 0xF0:  # a character beyond the BMP: not in the table, lower the text
        return text.lower().encode("utf-8", "surrogatepass")
    b1 = b[lead + 1] & 0x3F
    b2 = b[np.minimum(lead + 2, len(b) - 1)] & 0x3F
    code = np.where(b0 >= 0xE0, ((b0 & 0x0F) << 12) | (b1 << 6) | b2, ((b0 & 0x1F) << 6) | b1)
    if _cased_bmp()[code].any():
        return text.lower().encode("utf-8", "surrogatepass")
    return data


def _cased_bmp() -> np.ndarray:
    """``table[c]``: ``str.lower()`` changes ``chr(c)`` (BMP code points; built once)."""
    global _cased
    if _cased is None:
        _cased = np.fromiter((chr(c).lower() != chr(c) for c in range(0x10000)), dtype=bool,
                             count=0x10000)
    return _cased


def _join_block(encoded: list[str | bytes]) -> bytes:
    """``b"\\n" + b"\\n".join(texts) + b"\\n"``, each run of ASCII texts (``str``) joined and
    encoded at once: far cheaper than one encode per text."""
    parts: list[bytes] = [b""]
    for kind, run in groupby(encoded, key=type):
        if kind is bytes:
            parts.extend(cast(Iterator[bytes], run))
        else:
            parts.append("\n".join(cast(Iterator[str], run)).encode())
    parts.append(b"")
    return b"\n".join(parts)


def _block_bytes(encoded: list[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One block's buffer ``"\\n" + "\\n".join(texts) + "\\n"`` and its whitespace mask.

    The buffer is a new array with ASCII letters lowered (``str.lower()`` of an ASCII text;
    a non-ASCII text is lowered already but for, perhaps, its ASCII letters, and UTF-8 has
    no ASCII bytes inside other characters). The mask holds ASCII whitespace and the bytes
    of the Unicode spaces.
    """
    joined = np.frombuffer(_join_block(encoded), dtype=np.uint8)
    upper = ((joined - np.uint8(65)) < np.uint8(26)).view(np.uint8)  # A-Z
    upper *= np.uint8(32)  # (a uint8 multiply is vectorised, a shift is not)
    raw = joined | upper
    sp = _is_space(raw)
    if raw.max() >= 0x80:
        _mark_unicode_spaces(raw, sp)
    return raw, sp


def blocks(lengths: np.ndarray) -> list[tuple[int, int]]:
    ends = np.cumsum(lengths + 1)
    out, lo, n = [], 0, len(lengths)
    while lo < n:
        base = ends[lo - 1] if lo else 0
        hi = int(np.searchsorted(ends, base + _BLOCK_BYTES, side="right"))
        hi = min(max(hi, lo + 1), lo + _BLOCK_DOCS, n)
        out.append((lo, hi))
        lo = hi
    return out


def block_spans(encoded: list[str | bytes], kind: str, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Collapsed buffer and every shingle's (doc, start, end) span in it, for one block."""
    raw, sp = _block_bytes(encoded)
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    doc_start = np.cumsum(lens + 1) - lens  # the byte after each separator
    keep = ~sp
    keep[1:] |= ~sp[:-1]  # a whitespace byte is kept if the byte before it is not one
    kept_at = np.flatnonzero(keep)
    buf = raw[kept_at]
    buf[sp[kept_at]] = 32
    cdoc_start = np.searchsorted(kept_at, doc_start)
    csp = buf == 32  # the buffer ends with a space, and no two spaces are adjacent
    word_start = np.flatnonzero(~csp & np.concatenate(([True], csp[:-1])))
    word_end = np.flatnonzero(~csp & np.concatenate((csp[1:], [True]))) + 1
    word_doc = np.searchsorted(cdoc_start, word_start, side="right") - 1
    n_docs = len(encoded)
    counts = np.bincount(word_doc, minlength=n_docs)
    if kind == "word":
        short = (counts < n)[word_doc]
        idx = np.arange(len(word_start))
        last = idx + (n - 1)
        ok = last < len(word_start)
        ok[ok] = word_doc[last[ok]] == word_doc[ok]
        sel = np.flatnonzero(short | ok)
        starts = word_start[sel]
        ends = np.where(short[sel], word_end[sel], word_end[np.minimum(last[sel], len(word_end) - 1)])
        return buf, word_doc[sel], starts, ends
    # characters: each text is the span from its first word's start to its last word's end
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    docs = np.flatnonzero(has)
    ds = word_start[first[has]]
    de = word_end[first[has] + counts[has] - 1]
    cps = np.flatnonzero((buf & 0xC0) != 0x80)
    lo = np.searchsorted(cps, ds)
    hi = np.searchsorted(cps, de)
    m = hi - lo
    short = m < n
    n_grams = np.where(short, 1, m - n + 1)
    owner = np.repeat(np.arange(len(docs)), n_grams)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(n_grams) - n_grams, n_grams)
    i = lo[owner] + within
    cps = np.concatenate((cps, np.full(n, len(buf), dtype=cps.dtype)))
    starts = cps[i]
    ends = np.where(short[owner], de[owner], cps[i + n])
    return buf, docs[owner], starts, ends


def _seed_key(seed: int) -> np.uint64:
    # on a Python int: a one-element numpy mix cost ~15 us, paid once per block
    return _U64(mix64_int((seed & 0xFFFFFFFFFFFFFFFF) ^ 0x2545F4914F6CDD1D))


def _finalise(poly: np.ndarray, length: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of the polynomial, the length and the seed (``poly`` is overwritten)."""
    salted = length.astype(_U64)
    salted *= _LENGTH_SALT
    salted += _seed_key(seed)
    poly += salted
    return mix64(poly, copy=False)


def _byte_prefix(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums of ``b_k * BASE**k`` (with a leading 0), and the power tables."""
    pw, ipw = _power_tables(len(buf) + 1)
    prefix = np.empty(len(buf) + 1, dtype=_U64)
    prefix[0] = 0
    prefix[1:] = buf
    prefix[1:] *= pw[:len(buf)]
    np.cumsum(prefix, out=prefix)
    return prefix, pw, ipw


def span_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int) -> np.ndarray:
    """The hash of each byte span ``buf[starts[i]:ends[i]]``."""
    prefix, _, ipw = _byte_prefix(buf)
    return _finalise((prefix[ends] - prefix[starts]) * ipw[starts], ends - starts, seed)


def word_block_hashes(encoded: list[str | bytes], lengths: np.ndarray, n: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(n-grams per text, hashes in text order) of one block's texts (their UTF-8 lengths
    given), without building the n-gram strings.

    Word boundaries are the edges of the whitespace mask; each word's polynomial is read off
    the prefix sums of ``b_k * BASE**k`` over the block's bytes. The words are then laid out
    virtually one space apart and a prefix sum over words gives the polynomial of
    ``"w_a w_a+1 ... w_z"`` in O(1), equal to :func:`hash_strings` of it.
    """
    raw, sp = _block_bytes(encoded)  # the buffer starts and ends with whitespace ...
    bounds = np.empty(len(encoded) + 1, dtype=np.int64)  # where each text starts, then the end
    bounds[0] = 1
    np.cumsum(lengths, out=bounds[1:])
    bounds[1:] += np.arange(2, len(encoded) + 2)  # the first separator, one after each text
    change = np.empty(len(sp), dtype=bool)  # ... so edges alternate start, end
    change[0] = False
    np.not_equal(sp[1:], sp[:-1], out=change[1:])
    edges = np.flatnonzero(change)
    if len(edges) == 0:
        return np.zeros(len(encoded), np.int64), np.zeros(0, _U64)
    word_start, word_end = edges[0::2], edges[1::2]
    prefix, pw, ipw = _byte_prefix(raw)
    at_edges = prefix[edges]
    length = word_end - word_start
    vpos = np.cumsum(length + 1) - (length + 1)  # virtual positions, one space apart
    # the word's bytes moved from word_start to vpos: times BASE**(vpos - word_start)
    word_poly = (at_edges[1::2] - at_edges[0::2]) * ipw[word_start - vpos]
    vend = vpos + length
    tail = _U64(32) * pw[vend]  # the space after each word
    wprefix = np.empty(len(word_start) + 1, dtype=_U64)
    wprefix[0] = 0
    np.cumsum(word_poly + tail, out=wprefix[1:])
    upto = wprefix[1:] - tail  # through each word, without its space
    first = np.searchsorted(word_start, bounds)  # each text's first word, then the end
    counts = first[1:] - first[:-1]
    first = first[:-1]
    long = counts >= n
    per_doc = np.where(long, counts - (n - 1), counts)  # fewer than n words: single words
    total = int(per_doc.sum())
    a = np.arange(total) + np.repeat(first - (np.cumsum(per_doc) - per_doc), per_doc)
    # every run of n consecutive words in the block, by slices (cheap, contiguous), then one
    # gather of the runs that start an n-gram: fewer gathers than per n-gram
    runs = len(word_start) - (n - 1)
    if runs > 0:
        run_poly = upto[n - 1:] - wprefix[:runs]
        run_poly *= ipw[vpos[:runs]]
        run_len = vend[n - 1:] - vpos[:runs]
    else:  # fewer than n words in the whole block: all its texts are short
        runs, run_poly, run_len = 1, np.zeros(1, _U64), np.zeros(1, np.int64)
    short = n > 1 and not long[counts > 0].all()
    pick = np.minimum(a, runs - 1) if short else a
    poly, length = run_poly[pick], run_len[pick]
    if short:  # texts of fewer than n words: their single words
        at = np.flatnonzero(np.repeat(~long, per_doc))
        w = a[at]
        poly[at] = (upto[w] - wprefix[w]) * ipw[vpos[w]]
        length[at] = vend[w] - vpos[w]
    return per_doc, _finalise(poly, length, seed)


def distinct_per_doc(doc: np.ndarray, h: np.ndarray, n_docs: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Sort each doc's hashes and drop repeats; returns (counts per doc, hashes)."""
    if len(h) == 0:
        return np.zeros(n_docs, dtype=np.int64), h
    # one fast sort on (doc, top 48 bits of the hash); a tie in those bits between two
    # different hashes of one doc (rare) falls back to an exact two-key sort
    key = (doc.astype(_U64) << _U64(48)) | (h >> _U64(16))
    order = np.argsort(key)
    key, h, doc = key[order], h[order], doc[order]
    same_key = key[1:] == key[:-1]
    if np.any(same_key & (h[1:] != h[:-1])):
        order = np.lexsort((h, doc))
        h, doc = h[order], doc[order]
        dup = (h[1:] == h[:-1]) & (doc[1:] == doc[:-1])
    else:
        dup = same_key
    keep = np.concatenate(([True], ~dup))
    return np.bincount(doc[keep], minlength=n_docs), h[keep]


def iter_blocks(texts: Sequence[str], kind: str, n: int
                 ) -> Iterator[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    encoded, lengths = encode(texts)
    for lo, hi in blocks(lengths):
        yield lo, hi, block_spans(encoded[lo:hi], kind, n)
