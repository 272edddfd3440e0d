"""Just enough of LMDB's on-disk format to tell a short ``data.mdb`` from a truncated one.

An open must know whether a short ``data.mdb`` misses any *used* page (reading one would
fault with SIGBUS); this module walks LMDB's free database with plain reads of the file,
never touching a page past its end. Why files are short and the LMDB layout relied on:
docs/format.md ("What lshdb reads of LMDB's own format").
"""

from __future__ import annotations

import os
import struct

__all__ = ["missing_pages_are_free", "free_list"]

_MAGIC = 0xBEEFC0DE
_HDR = 16
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA = 0x01
_INVALID = 2**64 - 1
_META = struct.Struct("<IIQQ48s48sQQ")  # magic, version, address, mapsize, dbs, last_pg, txnid
_DB = struct.Struct("<IHHQQQQQ")  # pad, flags, depth, branch, leaf, overflow, entries, root
_NODE = struct.Struct("<HHHH")
_PAGE = struct.Struct("<QHHHH")


class _Unsure(Exception):
    """The file does not read as expected: treat the short file as truncated."""


def _meta(fd: int, offset: int) -> tuple[int, int, int, int]:
    """(page size, free DB root, last page, txnid) of the meta page at ``offset``."""
    raw = os.pread(fd, _HDR + _META.size, offset)
    if len(raw) < _HDR + _META.size:
        raise _Unsure("short meta page")
    magic, _, _, _, free, _, last, txnid = _META.unpack_from(raw, _HDR)
    if magic != _MAGIC:
        raise _Unsure("bad meta magic")
    psize, _, _, _, _, _, _, root = _DB.unpack(free)
    return psize, root, last, txnid


def _free_pages(fd: int, psize: int, root: int, have: int) -> tuple[set[int], int]:
    """Every page number listed in the free database rooted at ``root``, and how many
    pages that database itself occupies."""
    out: set[int] = set()
    own = 0

    def read(pgno: int, n: int = 1) -> bytes:
        nonlocal own
        own += n
        if pgno + n > have:
            raise _Unsure(f"page {pgno} of the free list is past the end of the file")
        raw = os.pread(fd, n * psize, pgno * psize)
        if len(raw) < n * psize or _PAGE.unpack_from(raw)[0] != pgno:
            raise _Unsure(f"page {pgno} does not read as itself")
        return raw

    def add_list(raw: bytes, off: int, size: int) -> None:
        if size < 8:
            raise _Unsure("short page list")
        (count,) = struct.unpack_from("<Q", raw, off)
        if 8 * (count + 1) > size:
            raise _Unsure("page list longer than its record")
        out.update(struct.unpack_from(f"<{count}Q", raw, off + 8))

    todo, seen = [root], 0
    while todo:
        pgno = todo.pop()
        seen += 1
        if seen > have:
            raise _Unsure("the free list does not end")
        page = read(pgno)
        _, _, flags, lower, _ = _PAGE.unpack_from(page)
        ptrs = struct.unpack_from(f"<{max(0, lower - _HDR) // 2}H", page, _HDR)
        for ptr in ptrs:
            if ptr + _NODE.size > psize:
                raise _Unsure("node past its page")
            lo, hi, nflags, ksize = _NODE.unpack_from(page, ptr)
            if flags & _P_BRANCH:
                todo.append(lo | hi << 16 | nflags << 32)
            elif flags & _P_LEAF:
                size, data = lo | hi << 16, ptr + _NODE.size + ksize
                if nflags & _F_BIGDATA:
                    (ov,) = struct.unpack_from("<Q", page, data)
                    head = os.pread(fd, _HDR, ov * psize) if ov < have else b""
                    if len(head) < _HDR or not _PAGE.unpack_from(head)[2] & _P_OVERFLOW:
                        raise _Unsure("big data without an overflow page")
                    (n,) = struct.unpack_from("<I", head, 12)
                    add_list(read(ov, n), _HDR, size)
                elif data + size <= psize:
                    add_list(page, data, size)
                else:
                    raise _Unsure("record past its page")
            else:
                raise _Unsure(f"page {pgno} is neither branch nor leaf")
    return out, own


def free_list(path: str, txnid: int) -> tuple[set[int], int, int, int]:
    """(free pages, pages of the free database itself, last page, whole pages in the file)
    of snapshot ``txnid`` of the LMDB file ``path``; raises ``ValueError`` when it does not
    read as expected (or that snapshot's meta page was overwritten)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        metas = [m for m in _metas(fd) if m[3] == txnid]
        if not metas:
            raise ValueError(f"no meta page of transaction {txnid}")
        psize, root, last, _ = metas[0]
        if psize < 512 or psize & (psize - 1):
            raise ValueError(f"page size {psize}")
        have = os.fstat(fd).st_size // psize
        if root == _INVALID:
            return set(), 0, last, have
        free, own = _free_pages(fd, psize, root, have)
        return free, own, last, have
    except (_Unsure, struct.error, OverflowError, MemoryError) as exc:
        raise ValueError(str(exc)) from exc
    finally:
        os.close(fd)


def missing_pages_are_free(path: str, txnid: int) -> bool:
    """Whether every page that transaction ``txnid``'s meta counts but ``path`` lacks is free.

    The caller holds a read transaction on ``txnid`` while this runs, so no writer reuses
    the pages read here. True means the file is short but whole: no tree of that snapshot
    refers to the missing pages, and reading the index never touches them. False means a
    used page may be missing, or the file does not read as this module expects, or the
    meta page of ``txnid`` was overwritten meanwhile (by two later commits): treat the
    file as truncated, or look again.
    """
    try:
        free, _, last, have = free_list(path, txnid)
    except ValueError:
        return False
    return all(p in free for p in range(have, last + 1))


def _metas(fd: int) -> list[tuple[int, int, int, int]]:
    """The valid meta pages (the second sits one page size after the first)."""
    first = _meta(fd, 0)
    try:
        return [first, _meta(fd, first[0])]
    except _Unsure:
        return [first]
