"""Byte layouts: external keys, internal ids, bucket keys, posting chunks and meta arrays.

Every layout here is explicit and independent of the host's byte order; they are described
in docs/format.md ("Keys and ids", "Posting lists", "Meta records").
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
import numpy as np

from ..errors import CorruptIndexError, InvalidKeyError

Key = str | int | bytes

ID_DTYPE = np.dtype("<u4")
MAX_ROWS = 2**32 - 1
MAX_KEY_BYTES = 480  # LMDB's key limit is 511 bytes

_U64 = struct.Struct(">Q")


# -- external keys -----------------------------------------------------------------


def normalize_key(key: Any) -> Key:
    """Return ``key`` as a plain str, int or bytes, or raise :class:`InvalidKeyError`."""
    if isinstance(key, bool):
        raise InvalidKeyError(f"keys must be str, int or bytes; found bool {key!r}")
    if isinstance(key, (str, bytes)):
        return key
    if isinstance(key, (int, np.integer)):
        value = int(key)
        if not -(2**63) <= value < 2**64:
            raise InvalidKeyError(f"int keys must fit in 64 bits; found {value}")
        return value
    raise InvalidKeyError(
        f"keys must be str, int or bytes; found {type(key).__name__} {key!r:.60}"
    )


def pack_key(key: Key) -> bytes:
    """Encode one (already normalised) external key for ``key2id``."""
    try:
        packed: bytes = msgpack.packb(key, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise InvalidKeyError(f"cannot encode key {key!r:.60}: {exc}") from exc
    if len(packed) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"keys are limited to {MAX_KEY_BYTES} encoded bytes; found {len(packed)} "
            f"for key {key!r:.40}..."
        )
    return packed


_PLAIN = {int, str, bytes}


def pack_keys(keys: list[Any]) -> tuple[list[Key], list[bytes]]:
    """Normalise and encode a batch of keys (fast path for plain int, str and bytes)."""
    types = set(map(type, keys))
    if types <= _PLAIN:
        if int in types:
            ints = [k for k in keys if type(k) is int] if len(types) > 1 else keys
            if ints and (min(ints) < -(2**63) or max(ints) >= 2**64):
                bad = next(k for k in ints if not -(2**63) <= k < 2**64)
                raise InvalidKeyError(f"int keys must fit in 64 bits; found {bad}")
        normal: list[Key] = keys
    else:
        normal = [normalize_key(k) for k in keys]
    packer = msgpack.Packer(use_bin_type=True)
    try:
        packed = [packer.pack(k) for k in normal]
    except (UnicodeEncodeError, ValueError, TypeError):
        packed = [pack_key(k) for k in normal]  # names the offending key
    if packed and max(map(len, packed)) > MAX_KEY_BYTES:
        for k in normal:
            pack_key(k)
    return normal, packed


def unpack_key(data: bytes) -> Key:
    """Decode a key written by :func:`pack_key`."""
    try:
        key = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.exceptions.ExtraData, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"undecodable key record {data[:40]!r}") from exc
    if not isinstance(key, (str, int, bytes)) or isinstance(key, bool):
        raise CorruptIndexError(f"key record holds a {type(key).__name__}, not a key")
    return key


def unpack_keys(data: list[bytes]) -> list[Key]:
    """:func:`unpack_key` of each record, with the same checks, in one pass."""
    try:
        keys = [msgpack.unpackb(d, raw=False) for d in data]
    except (ValueError, msgpack.exceptions.ExtraData, UnicodeDecodeError):
        keys = []
    if len(keys) != len(data) or not set(map(type, keys)) <= _PLAIN:
        return [unpack_key(d) for d in data]  # names the bad record
    return keys


# -- internal ids --------------------------------------------------------------------


def pack_id(i: int) -> bytes:
    return _U64.pack(i)


def unpack_id(data: bytes) -> int:
    if len(data) != 8:
        raise CorruptIndexError(f"id record of {len(data)} bytes; expected 8")
    return int(_U64.unpack(data)[0])


def pack_ids(ids: np.ndarray) -> list[bytes]:
    """Encode many ids at once (one big-endian buffer, read as 8-byte strings)."""
    return np.ascontiguousarray(ids, dtype=">u8").view("V8").tolist()  # type: ignore[no-any-return]


# -- bucket keys and posting chunks ------------------------------------------------------


def bucket_bytes(keys: np.ndarray) -> bytes:
    """All bucket keys of a uint64 array as one big-endian buffer (slice 8 bytes each)."""
    return np.ascontiguousarray(keys, dtype=">u8").tobytes()


DELTA_EXT = 1  # msgpack ext type of a gap-encoded posting chunk


def _bin_header(n: int) -> bytes:
    if n < 256:
        return b"\xc4" + bytes((n,))
    if n < 65536:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _ext_header(n: int) -> bytes:
    if n < 256:
        return b"\xc7" + bytes((n, DELTA_EXT))
    if n < 65536:
        return b"\xc8" + n.to_bytes(2, "big") + bytes((DELTA_EXT,))
    return b"\xc9" + n.to_bytes(4, "big") + bytes((DELTA_EXT,))


def encode_postings(ids: np.ndarray, compact: bool = False) -> bytes:
    """A sorted id array -> msgpack bin of uint32 (or, with ``compact``, gaps if they fit)."""
    a = np.ascontiguousarray(ids, dtype=ID_DTYPE)
    if compact and len(a) > 2:
        gaps = np.diff(a)
        if int(gaps.max()) < 65536:
            raw = a[:1].tobytes() + gaps.astype("<u2").tobytes()
            return _ext_header(len(raw)) + raw
    raw = a.tobytes()
    return _bin_header(len(raw)) + raw


def decode_postings(value: bytes) -> np.ndarray:
    """A chunk value -> uint32 ids (read-only when it views ``value``; copy to keep)."""
    tag = value[0] if value else 0
    if tag == 0xC4:
        start, n = 2, value[1]
    elif tag == 0xC5:
        start, n = 3, int.from_bytes(value[1:3], "big")
    elif tag == 0xC6:
        start, n = 5, int.from_bytes(value[1:5], "big")
    elif tag in (0xC7, 0xC8, 0xC9):
        width = {0xC7: 1, 0xC8: 2, 0xC9: 4}[tag]
        n = int.from_bytes(value[1 : 1 + width], "big")
        start = 2 + width
        if value[1 + width] != DELTA_EXT or n < 4 or (n - 4) % 2 or start + n != len(value):
            raise CorruptIndexError(f"posting chunk has a malformed gap encoding ({len(value)} bytes)")
        first = np.frombuffer(value, dtype=ID_DTYPE, count=1, offset=start)
        out = np.empty(1 + (n - 4) // 2, dtype=ID_DTYPE)
        out[0] = first[0]
        np.cumsum(np.frombuffer(value, dtype="<u2", offset=start + 4), out=out[1:])
        out[1:] += first[0]
        return out
    else:
        raise CorruptIndexError(f"posting chunk does not start with a msgpack bin (0x{tag:02x})")
    if n % 4 or start + n != len(value):
        raise CorruptIndexError(
            f"posting chunk of {len(value)} bytes declares {n} bytes of uint32 ids"
        )
    return np.frombuffer(value, dtype=ID_DTYPE, offset=start)


def decode_many(values: list[bytes]) -> np.ndarray:
    """The ids of many chunk values, concatenated (uint32, which sorts faster than int64;
    ids of different chunks in no particular order): :func:`decode_postings` for a whole
    query at once. The gap-encoded chunks share one cumulative sum instead of one each;
    anything not in a well-formed common form goes through :func:`decode_postings`, which
    validates it (and raises on a garbled chunk).
    """
    pieces: list[np.ndarray] = []
    firsts: list[int] = []
    gaps: list[bytes] = []
    plain: list[bytes] = []
    for v in values:
        tag, size = v[0], len(v)
        if tag == 0xC7 and v[2] == DELTA_EXT and v[1] == size - 3 and v[1] >= 4 \
                and not v[1] & 1:
            firsts.append(int.from_bytes(v[3:7], "little"))
            gaps.append(v[7:])
        elif tag == 0xC8 and v[3] == DELTA_EXT and (v[1] << 8 | v[2]) == size - 4 \
                and size >= 8 and not size & 1:
            firsts.append(int.from_bytes(v[4:8], "little"))
            gaps.append(v[8:])
        else:
            start = plain_start(v)
            if start:
                plain.append(v[start:])
            else:
                pieces.append(decode_postings(v))
    if plain:  # every plain chunk in one buffer
        pieces.append(np.frombuffer(b"".join(plain), dtype=ID_DTYPE))
    if firsts:
        lengths = np.fromiter((len(g) >> 1 for g in gaps), dtype=np.int64, count=len(gaps)) + 1
        starts = np.cumsum(lengths) - lengths
        # uint32 arithmetic wraps modulo 2**32, and every true id is below that: exact
        d = np.zeros(int(lengths.sum()), dtype=np.uint32)
        mask = np.ones(len(d), dtype=bool)
        mask[starts] = False
        d[mask] = np.frombuffer(b"".join(gaps), dtype="<u2")
        c = np.cumsum(d, dtype=np.uint32)
        c += np.repeat(np.asarray(firsts, dtype=np.uint32) - c[starts], lengths)
        pieces.append(c)
    if not pieces:
        return np.empty(0, dtype=np.uint32)
    if len(pieces) == 1:
        return pieces[0].astype(np.uint32)
    return np.concatenate([p.astype(np.uint32, copy=False) for p in pieces])


def plain_start(value: bytes) -> int:
    """Where the ids of a well-formed plain (bin8/bin16) chunk start, else 0: the cheap
    test that lets hot paths slice the common form and leave the rest to the validating
    :func:`decode_postings`."""
    size = len(value)
    if size >= 2 and value[0] == 0xC4 and value[1] == size - 2 and not value[1] & 3:
        return 2
    if size >= 3 and value[0] == 0xC5 and (value[1] << 8 | value[2]) == size - 3 \
            and not value[2] & 3:
        return 3
    return 0


# -- meta -----------------------------------------------------------------------------


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in ("|", "<") else a.dtype
    return {"dtype": dt.str, "shape": list(a.shape), "data": a.astype(dt).tobytes()}


def decode_array(d: Any, name: str = "array") -> np.ndarray:
    try:
        dt = np.dtype(d["dtype"])
        shape = tuple(int(s) for s in d["shape"])
        a = np.frombuffer(d["data"], dtype=dt)
        return a.reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(f"stored {name} cannot be decoded: {exc}") from exc


def pack_meta(obj: Any) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body + zlib.crc32(body).to_bytes(4, "big")


def unpack_meta(data: bytes, name: str) -> Any:
    body, crc = data[:-4], data[-4:]
    if len(data) < 5 or zlib.crc32(body).to_bytes(4, "big") != crc:
        raise CorruptIndexError(
            f"meta record {name!r} fails its checksum; the index is damaged: run `lshdb check` "
            "and restore it from a backup")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.exceptions.ExtraData, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"meta record {name!r} cannot be decoded: {exc}") from exc


def mark_format(txn: Any, meta: Any, version: int) -> None:
    """Raise the index's stored format version to at least ``version`` (never lower it)."""
    raw = txn.get(b"format", db=meta)
    fmt = unpack_meta(raw, "format") if raw is not None else {}
    if not isinstance(fmt, dict) or int(fmt.get("format_version", 0)) < version:
        txn.put(b"format", pack_meta({"format_version": version}), db=meta)
