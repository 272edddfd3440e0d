"""Posting lists of one hash table: a bucket is a run of chunks under one 8-byte prefix.

Sealed chunks and one small open tail per bucket, so an append rewrites at most
``TAIL_MAX`` ids however large the bucket is; the layout is described in docs/format.md
("Posting lists").
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .codec import ID_DTYPE, _bin_header, _ext_header, decode_postings, encode_postings, plain_start

__all__ = ["TAIL", "TAIL_MAX", "SEALED_MAX", "bulk_load", "append", "remove",
           "read_buckets", "iter_table", "group_by_bucket", "stable_bucket_order"]

TAIL = b"\xff\xff\xff\xff"
TAIL_MAX = 480
SEALED_MAX = 16384
_ZERO = b"\x00\x00\x00\x00"
_U32 = struct.Struct(">I")


def group_by_bucket(buckets: np.ndarray, ids: np.ndarray) -> tuple[bytes, np.ndarray, bytes]:
    """Sort (bucket, id) pairs by bucket, ids ascending within a bucket.

    Returns the unique buckets as one big-endian buffer, the start offset of each bucket's
    run (plus the end), and the ids as one little-endian uint32 buffer in that order.
    """
    order = _order(buckets, ids)
    b = buckets[order]
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    bounds = np.append(starts, len(b))
    return (np.ascontiguousarray(b[starts], dtype=">u8").tobytes(), bounds,
            np.ascontiguousarray(ids[order], dtype=ID_DTYPE).tobytes())


def _order(buckets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The permutation sorting pairs by bucket, then id."""
    if len(ids) > 1 and (np.diff(ids) <= 0).any():
        return np.lexsort((ids, buckets))
    return stable_bucket_order(buckets)  # ids ascending (always, in practice)


def stable_bucket_order(buckets: np.ndarray) -> np.ndarray:
    """``argsort(buckets, kind="stable")``, faster for wide (hashed) bucket keys.

    Keys below 2**16 take numpy's radix sort. Keys narrow enough to share a 64-bit word
    with the row position (``key << bits | position``) take one plain value sort of those
    words (SIMD, several times faster than a stable argsort of uint64), exact. Wider keys
    replace their low bits by the row position instead; the result is exact unless two
    buckets share every high bit, which the check catches (then the stable argsort runs).
    """
    n = len(buckets)
    if n < 2:
        return np.arange(n)
    top = int(buckets.max())
    if top < 65536:
        return np.argsort(buckets.astype(np.uint16), kind="stable")
    bits = (n - 1).bit_length()
    low = np.uint64((1 << bits) - 1)
    if top.bit_length() + bits <= 64:  # e.g. the k-bit keys of hyperplanes
        packed = buckets.astype(np.uint64) << np.uint64(bits)
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        return (packed & low).astype(np.intp)
    if bits > 40 or top < (1 << (bits + 16)):  # few high bits left: the plain way
        return np.argsort(buckets, kind="stable")
    packed = (buckets.astype(np.uint64) & ~low) | np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.intp)
    b = buckets[order]
    if (b[1:] < b[:-1]).any():
        return np.argsort(buckets, kind="stable")
    return order


def _sealed_items(bucket: bytes, payload: bytes, out: list[tuple[bytes, bytes]]) -> None:
    """Seal little-endian uint32 ids (``payload``) into chunks of at most SEALED_MAX."""
    ids = np.frombuffer(payload, dtype=ID_DTYPE)
    for s in range(0, len(ids), SEALED_MAX):
        piece = ids[s : s + SEALED_MAX]
        out.append((bucket + _U32.pack(int(piece[0])), encode_postings(piece, compact=True)))


def bulk_load(cursor: Any, buckets: np.ndarray, ids: np.ndarray) -> int:
    """Write a whole table in one pass; the table must be empty. Returns chunks written.

    Every bucket becomes sealed chunks (gap-encoded where the gaps fit in 16 bits).
    """
    if len(ids) == 0:
        return 0
    order = _order(buckets, ids)
    b = buckets[order]
    sid = np.ascontiguousarray(ids[order], dtype=ID_DTYPE)
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    ends = np.append(starts[1:], len(b))
    if len(b) and int((ends - starts).max()) > SEALED_MAX:
        # split runs longer than SEALED_MAX into sealed chunks of at most that many ids
        pieces = [np.arange(s, e, SEALED_MAX) for s, e in zip(starts.tolist(), ends.tolist())]
        starts = np.concatenate(pieces)
        ends = np.append(starts[1:], len(b))
    keys = np.empty(len(starts), dtype=[("b", ">u8"), ("f", ">u4")])
    keys["b"] = b[starts]
    keys["f"] = sid[starts]
    gaps = np.diff(sid.astype(np.int64), prepend=0)
    gaps[starts] = 0
    compact = (np.maximum.reduceat(gaps, starts) < 65536) & (ends - starts > 2) \
        if len(starts) else np.zeros(0, dtype=bool)
    plain = sid.tobytes()
    small_gaps = np.where(gaps < 65536, gaps, 0).astype("<u2").tobytes()
    gap_heads, plain_heads = _chunk_headers()
    sizes = ends - starts
    id_bytes = sid.view(np.uint8).reshape(-1, 4)
    gap_bytes = np.frombuffer(small_gaps, dtype=np.uint8).reshape(-1, 2)

    def one(j: int) -> bytes:
        s, e = int(starts[j]), int(ends[j])
        if compact[j]:
            return gap_heads[e - s] + plain[4 * s : 4 * s + 4] + small_gaps[2 * s + 2 : 2 * e]
        return plain_heads[e - s] + plain[4 * s : 4 * e]

    def block(group: np.ndarray) -> np.ndarray:
        c, first = int(sizes[group[0]]), starts[group]
        if compact[group[0]]:  # header, first id, 16-bit gaps
            return _rows(gap_heads[c], id_bytes[first],
                         gap_bytes[first[:, None] + np.arange(1, c)].reshape(len(group), -1))
        return _rows(plain_heads[c], id_bytes[first[:, None] + np.arange(c)].reshape(len(group), -1))

    values = _values_in_order(sizes + compact * (SEALED_MAX + 1), block, one)
    items = list(zip(keys.view("V12").tolist(), values))
    cursor.putmulti(items, append=True)
    return len(items)


_HEADERS: list[list[bytes]] = []


def _chunk_headers() -> tuple[list[bytes], list[bytes]]:
    """Headers of a sealed chunk of m ids, indexed by m: gap-encoded and plain (built on
    first use: a bulk load writes a chunk per bucket, so a lookup beats a call)."""
    if not _HEADERS:
        _HEADERS.append([_ext_header(2 * m + 2) for m in range(SEALED_MAX + 1)])
        _HEADERS.append([_bin_header(4 * m) for m in range(SEALED_MAX + 1)])
    return _HEADERS[0], _HEADERS[1]


_TAIL_HEADERS = [_bin_header(4 * m) for m in range(TAIL_MAX + 1)]
_TAIL_KEY = np.dtype([("b", ">u8"), ("t", ">u4")])


def append(txn: Any, db: Any, buckets: np.ndarray, ids: np.ndarray) -> None:
    """Add ``ids`` (all larger than any id in the table) to their ``buckets``.

    One ``getmulti`` reads the touched tails; their headers are checked for the whole
    batch at once. A bucket without a tail gets ``header + new ids`` (built in numpy, see
    :func:`_new_tail_items`); an existing tail becomes ``header + old ids + new ids`` by
    byte slicing. A tail that would pass ``TAIL_MAX`` ids is sealed instead.
    """
    ub, bounds, payload = group_by_bucket(buckets, ids)
    n = len(bounds) - 1
    if n == 0:
        return
    keys = np.empty(n, dtype=_TAIL_KEY)
    keys["b"] = np.frombuffer(ub, dtype=">u8")
    keys["t"] = 0xFFFFFFFF
    tail_keys = keys.view("V12")  # fixed-width bytes
    tails = tail_keys.tolist()
    cursor = txn.cursor(db)
    found = cursor.getmulti(tails)
    counts = np.diff(bounds)
    if not found and int(counts.max()) <= TAIL_MAX:  # every touched bucket starts a tail
        cursor.putmulti(_new_tail_items(tail_keys, np.arange(n), counts, bounds, payload))
        return
    old_s = np.zeros(n, dtype=np.int64)
    old_e = np.zeros(n, dtype=np.int64)
    joined = b""
    if found:
        parsed = _plain_tails(found)
        if parsed is None:  # a tail in another form (or damaged): decode one by one
            _append_general(txn, db, cursor, tails, dict(found), bounds, payload)
            return
        fb, old_s_f, old_e_f, joined = parsed
        pos = np.searchsorted(keys["b"], fb)
        old_s[pos] = old_s_f
        old_e[pos] = old_e_f
    total = (old_e - old_s) // 4 + counts
    fits = total <= TAIL_MAX
    fresh = fits & (old_e == old_s)
    items = _new_tail_items(tail_keys, np.flatnonzero(fresh), counts, bounds, payload)
    heads = _TAIL_HEADERS
    b4 = (bounds * 4).tolist()
    s, e = old_s.tolist(), old_e.tolist()
    items += [(tails[j], heads[c] + joined[s[j]:e[j]] + payload[b4[j]:b4[j + 1]])
              for j, c in zip(np.flatnonzero(fits & ~fresh).tolist(),
                              total[fits & ~fresh].tolist())]
    for j in np.flatnonzero(~fits).tolist():  # tails that would overflow: seal them
        _sealed_items(tails[j][:8], joined[s[j]:e[j]] + payload[b4[j]:b4[j + 1]], items)
        if e[j] > s[j]:
            txn.delete(tails[j], db=db)
    cursor.putmulti(items)


_GROUP_MIN = 16  # values of one width built as one numpy block from this many


def _values_in_order(kinds: np.ndarray, block: Callable[[np.ndarray], np.ndarray],
                     one: Callable[[int], bytes]) -> list[bytes]:
    """Value ``j`` for every ``j``, in order, where values of equal ``kinds[j]`` have one
    layout and width.

    Each kind met at least ``_GROUP_MIN`` times is built at once: ``block(indices)``
    returns its values as the rows of a uint8 matrix, handed on as fixed-width byte
    strings (numpy's "V" type keeps every byte), with no Python work per value. Rarer
    kinds are built one by one with ``one(j)``.
    """
    n = len(kinds)
    if n < _GROUP_MIN:
        return [one(j) for j in range(n)]
    out = np.empty(n, dtype=object)
    order = np.argsort(kinds, kind="stable")
    edges = (np.flatnonzero(np.diff(kinds[order])) + 1).tolist()
    for lo, hi in zip([0, *edges], [*edges, n]):
        group = order[lo:hi]
        if hi - lo < _GROUP_MIN:
            out[group] = [one(j) for j in group.tolist()]
        else:
            rows = block(group)
            out[group] = rows.view(f"V{rows.shape[1]}").ravel().astype(object)
    return out.tolist()  # type: ignore[no-any-return]


def _rows(head: bytes, *parts: np.ndarray) -> np.ndarray:
    """``head`` followed by ``parts`` (uint8 matrices with one row per value)."""
    h = np.frombuffer(head, dtype=np.uint8)
    out = np.empty((len(parts[0]), len(h) + sum(p.shape[1] for p in parts)), dtype=np.uint8)
    out[:, : len(h)] = h
    col = len(h)
    for p in parts:
        out[:, col : col + p.shape[1]] = p
        col += p.shape[1]
    return out


def _new_tail_items(tail_keys: np.ndarray, which: np.ndarray, counts: np.ndarray,
                    bounds: np.ndarray, payload: bytes) -> list[tuple[bytes, bytes]]:
    """``(tail key, header + new ids)`` for the buckets ``which``, none of which has a
    tail; the values of buckets with equal id counts are built together
    (:func:`_values_in_order`). With one id per bucket (near-duplicate detection, fresh
    buckets) this is most of a write's Python cost."""
    heads = _TAIL_HEADERS
    c_of, first = counts[which], bounds[which]
    ids = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 4)

    def one(j: int) -> bytes:
        c, a = int(c_of[j]), 4 * int(first[j])
        return heads[c] + payload[a : a + 4 * c]

    def block(group: np.ndarray) -> np.ndarray:
        c = int(c_of[group[0]])
        return _rows(heads[c], ids[first[group][:, None] + np.arange(c)].reshape(len(group), -1))

    return list(zip(tail_keys[which].tolist(), _values_in_order(c_of, block, one)))


def _plain_tails(found: list[tuple[bytes, bytes]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes] | None:
    """Parse the plain (bin8/bin16) tails of ``found`` all at once: their buckets and where
    each one's ids start and end in the joined values. None when any tail is in another
    form, so the caller decodes them one by one (and a damaged one raises there)."""
    vals = [v for _, v in found]
    lens = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
    joined = b"".join(vals)
    buf = np.frombuffer(joined + b"\0\0\0", dtype=np.uint8)  # padded: headers read safely
    off = np.cumsum(lens) - lens
    tag, b1, b2 = buf[off], buf[off + 1].astype(np.int64), buf[off + 2].astype(np.int64)
    hdr = np.where(tag == 0xC4, 2, np.where(tag == 0xC5, 3, 0))
    size = np.where(tag == 0xC4, b1, (b1 << 8) | b2)
    if not ((hdr > 0) & (lens >= hdr) & (size == lens - hdr) & (size % 4 == 0)).all():
        return None
    fb = np.frombuffer(b"".join([k for k, _ in found]), dtype=_TAIL_KEY)["b"]
    return fb, off + hdr, off + lens, joined


def _append_general(txn: Any, db: Any, cursor: Any, tails: list[bytes],
                    found: dict[bytes, bytes], bounds: np.ndarray, payload: bytes) -> None:
    b4 = (bounds * 4).tolist()
    limit = 4 * TAIL_MAX
    heads = _TAIL_HEADERS
    olds = [found.get(key) for key in tails]
    datas = [payload[b4[j] : b4[j + 1]] if old is None
             else _tail_payload(old) + payload[b4[j] : b4[j + 1]] for j, old in enumerate(olds)]
    items = [(tails[j], heads[len(d) >> 2] + d) for j, d in enumerate(datas) if len(d) <= limit]
    for j, d in enumerate(datas):
        if len(d) > limit:
            _sealed_items(tails[j][:8], d, items)
            if olds[j] is not None:
                txn.delete(tails[j], db=db)
    cursor.putmulti(items)


def _tail_payload(value: bytes) -> bytes:
    """The ids of a tail as little-endian uint32 bytes; a plain tail (the form every tail
    is written in) is sliced without decoding, anything else is decoded and validated."""
    start = plain_start(value)
    return value[start:] if start else decode_postings(value).tobytes()


def remove(txn: Any, db: Any, buckets: np.ndarray, ids: np.ndarray) -> int:
    """Remove each ``ids[j]`` from bucket ``buckets[j]``. Returns how many were not found.

    Per bucket: the chunk keys are listed (keys only, no values), each id is assigned to
    the chunk whose range covers it, and only those chunks are decoded and rewritten.
    """
    ub, bounds, payload = group_by_bucket(buckets, ids)
    all_ids = np.frombuffer(payload, dtype=ID_DTYPE)
    cursor = txn.cursor(db)
    missing = 0
    for j in range(len(bounds) - 1):
        bucket = ub[8 * j : 8 * j + 8]
        todo = all_ids[bounds[j] : bounds[j + 1]]
        sealed: list[int] = []
        has_tail = False
        if cursor.set_range(bucket + _ZERO):
            for key in cursor.iternext(values=False):
                if key[:8] != bucket:
                    break
                if key[8:] == TAIL:
                    has_tail = True
                else:
                    sealed.append(_U32.unpack_from(key, 8)[0])
        targets: dict[bytes, np.ndarray] = {}
        rest = todo
        if has_tail:
            tail_key = bucket + TAIL
            tail = decode_postings(cursor.get(tail_key))
            in_tail = todo >= tail[0] if len(tail) else np.zeros(len(todo), dtype=bool)
            if in_tail.any():
                targets[tail_key] = todo[in_tail]
            rest = todo[~in_tail]
        if len(rest):
            which = np.searchsorted(np.asarray(sealed, dtype=np.int64), rest, "right") - 1
            missing += int((which < 0).sum())
            for c in np.unique(which[which >= 0]).tolist():
                targets[bucket + _U32.pack(sealed[c])] = rest[which == c]
        for key, gone in targets.items():
            arr = decode_postings(cursor.get(key))
            pos = np.minimum(np.searchsorted(arr, gone), len(arr) - 1)
            hit = arr[pos] == gone  # both sorted: each id is found where it would go
            n_hit = int(hit.sum())
            missing += len(gone) - n_hit
            if n_hit == 0:
                continue
            if n_hit < len(arr):
                keep = np.ones(len(arr), dtype=bool)
                keep[pos[hit]] = False
                txn.put(key, encode_postings(arr[keep], compact=key[8:] != TAIL), db=db)
            else:
                txn.delete(key, db=db)
    return missing


def read_buckets(cursors: list[Any], tables: list[int], buckets: bytes) -> list[bytes]:
    """The raw chunk values of bucket ``j`` (8 bytes at ``8 * j`` of ``buckets``) of table
    ``tables[j]``, for every ``j``, read through ``cursors[table]``; decode them with
    ``codec.decode_many``. This loop runs once per probe of every query."""
    values: list[bytes] = []
    add = values.append
    for j, t in enumerate(tables):
        bucket = buckets[8 * j : 8 * j + 8]
        c = cursors[t]
        if not c.set_range(bucket):
            continue
        key = c.key()
        while key[:8] == bucket:  # (the next bucket's value is never copied)
            add(c.value())
            if key[8:] == TAIL or not c.next():  # the tail is a bucket's last chunk
                break
            key = c.key()
    return values


def find(txn: Any, db: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (bucket, id) pairs of a table that hold any of ``ids``, found by reading the
    whole table: for ids whose buckets cannot be recomputed (a damaged row)."""
    want = np.asarray(ids, dtype=np.int64)
    buckets: list[int] = []
    found: list[np.ndarray] = []
    for bucket, _, arr in iter_table(txn, db):
        hit = arr[np.isin(arr, want)]
        if len(hit):
            found.append(hit.astype(np.int64))
            buckets += [int.from_bytes(bucket, "big")] * len(hit)
    return (np.asarray(buckets, dtype=np.uint64),
            np.concatenate(found) if found else np.empty(0, dtype=np.int64))


def iter_table(txn: Any, db: Any) -> Iterator[tuple[bytes, bytes, np.ndarray]]:
    """Every chunk of a table: (bucket, suffix, ids), in key order."""
    cursor = txn.cursor(db)
    for key, value in cursor:
        yield key[:8], key[8:], decode_postings(value)
