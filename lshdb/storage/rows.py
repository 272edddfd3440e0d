"""The row file: fixed-width rows (vectors, codes or signatures), append-only, memory-mapped.

The layout and the checksum are described in docs/format.md ("The row file"). Only rows
below the committed count of an LMDB snapshot are ever read; readers get copies, never
views into the map.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import CorruptIndexError

__all__ = ["RowFile", "ROWS_NAME", "RowDerived", "RowNorms"]

ROWS_NAME = "rows.bin"
_MAGIC = b"LSHDBROW"
_VERSION = 1
_HEADER = struct.Struct("<8sIIII8s")
_HEADER_BYTES = 64
_GROW_MIN = 1 << 24  # grow the file by at least 16 MiB at a time
_EARLY_FLUSH = 1 << 24  # a write this large starts flushing at once, in the background


def _multipliers(n_words: int) -> tuple[np.ndarray, np.uint64]:
    rng = np.random.default_rng(0x5EED_0F_C0FFEE)
    w = rng.integers(0, 2**63, n_words + 1, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return w[1:], w[0]


def _checksums(words: np.ndarray, ids: np.ndarray, W: np.ndarray, W0: np.uint64
               ) -> np.ndarray:
    """``words @ W + (ids + 1) * W0`` modulo 2**64 for payload words ``(n, n_words)``;
    einsum's loop is about twice as fast as matmul's for integers (same result)."""
    with np.errstate(over="ignore"):
        return np.einsum("ij,j->i", words, W) + (ids.astype(np.uint64) + np.uint64(1)) * W0


class RowFile:
    """One generation's ``rows.bin``.

    Thread-safety: reads are safe from any thread; writes belong to the single writer.
    """

    def __init__(self, path: str, dim: int, dtype: np.dtype, writable: bool,
                 create: bool = False, checked: bool = True) -> None:
        self.path = path
        self.dim = int(dim)
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        raw = self.dim * self.dtype.itemsize
        self.payload_bytes = raw
        self.padded_bytes = (raw + 7) // 8 * 8
        self.checked = checked  # without checksums rows are contiguous (for scans)
        self.row_bytes = self.padded_bytes + (8 if checked else 0)
        self._n_words = self.padded_bytes // 8
        self._W, self._W0 = _multipliers(self._n_words)
        # payload words and checksum times this: payload . W - checksum, which adding the
        # id's term brings to 0 in a row that is intact
        self._W_check = np.append(self._W, np.uint64(2**64 - 1))
        self.writable = writable
        self._lock = threading.Lock()
        flags = os.O_RDWR if writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        self._fd = os.open(path, flags, 0o644)
        if create:
            header = _HEADER.pack(_MAGIC, _VERSION, self.row_bytes, raw, self.dim,
                                  self.dtype.str.encode().ljust(8))
            os.pwrite(self._fd, header.ljust(_HEADER_BYTES, b"\0"), 0)
            os.fsync(self._fd)
        else:
            self._check_header()
        self._map: mmap.mmap | None = None
        self._view: np.ndarray | None = None
        self._mapped_rows = 0
        self._flusher: threading.Thread | None = None

    def _check_header(self) -> None:
        head = os.pread(self._fd, _HEADER_BYTES, 0)
        if len(head) < _HEADER.size:
            raise CorruptIndexError(f"{self.path} is truncated (no header); restore from a backup")
        magic, version, row_bytes, raw, dim, dt = _HEADER.unpack_from(head)
        if magic != _MAGIC:
            raise CorruptIndexError(f"{self.path} is not an lshdb row file (bad magic)")
        if version != _VERSION:
            raise CorruptIndexError(f"{self.path} has row format {version}; expected {_VERSION}")
        if (row_bytes, raw, dim) != (self.row_bytes, self.payload_bytes, self.dim) or \
                dt.rstrip(b" \0").decode("ascii", "replace") != self.dtype.str:
            raise CorruptIndexError(
                f"{self.path} holds rows of dim {dim} ({dt!r}); the index expects dim "
                f"{self.dim} ({self.dtype.str})")

    # -- size ------------------------------------------------------------------------
    def file_rows(self) -> int:
        """Whole rows the file can hold (committed or not)."""
        return max(0, (os.fstat(self._fd).st_size - _HEADER_BYTES) // self.row_bytes)

    def size_bytes(self) -> int:
        """Bytes the file occupies on disk (it grows sparse, ahead of its rows)."""
        return int(os.fstat(self._fd).st_blocks) * 512

    def require(self, n_rows: int) -> None:
        """Raise :class:`CorruptIndexError` unless the file holds ``n_rows`` rows."""
        have = self.file_rows()
        if have < n_rows:
            raise CorruptIndexError(
                f"{self.path} holds {have} rows but the index has committed {n_rows}: "
                "the row file was truncated; restore it from a backup")

    # -- writing ---------------------------------------------------------------------
    def checksums(self, payload: np.ndarray, first_id: int) -> np.ndarray:
        words = payload.view("<u8").reshape(len(payload), self._n_words)
        ids = np.arange(first_id, first_id + len(payload), dtype=np.uint64)
        return _checksums(words, ids, self._W, self._W0)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` as padded little-endian payload bytes, shape (n, padded)."""
        n = len(values)
        out = np.zeros((n, self.padded_bytes), dtype=np.uint8)
        out[:, : self.payload_bytes] = np.ascontiguousarray(
            values, dtype=self.dtype).reshape(n, -1).view(np.uint8)
        return out

    def write(self, first_id: int, values: np.ndarray) -> None:
        """Write rows ``first_id ..`` (not yet durable: call :meth:`sync`)."""
        if not self.writable:
            raise CorruptIndexError("row file opened read-only")
        n = len(values)
        end = _HEADER_BYTES + (first_id + n) * self.row_bytes
        size = os.fstat(self._fd).st_size
        if end > size:
            os.ftruncate(self._fd, max(end, size + max(_GROW_MIN, size // 4)))
        step = max(1, (8 << 20) // self.row_bytes)
        for s in range(0, n, step):
            payload = self.encode(values[s : s + step])
            rec = np.empty((len(payload), self.row_bytes), dtype=np.uint8)
            rec[:, : self.padded_bytes] = payload
            if self.checked:
                rec[:, self.padded_bytes :] = self.checksums(payload, first_id + s).astype(
                    "<u8").view(np.uint8).reshape(-1, 8)
            os.pwrite(self._fd, rec.tobytes(), _HEADER_BYTES + (first_id + s) * self.row_bytes)
        if n * self.row_bytes >= _EARLY_FLUSH and not (self._flusher and self._flusher.is_alive()):
            # a bulk write: the disk starts on it while the batch is hashed and posted;
            # :meth:`sync` still waits for it and flushes again before any commit
            self._flusher = threading.Thread(target=self._flush, name="lshdb-rows-flush",
                                             daemon=True)
            self._flusher.start()

    def _flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError:
            pass  # the caller's own sync raises it

    def _join_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def sync(self) -> None:
        self._join_flusher()
        os.fdatasync(self._fd)

    # -- reading ---------------------------------------------------------------------
    def _records(self, n_rows: int) -> np.ndarray:
        view = self._view
        if view is not None and len(view) >= n_rows:  # mapped far enough already
            return view
        with self._lock:
            if self._view is None or self._mapped_rows < n_rows:
                self.require(n_rows)
                length = _HEADER_BYTES + self.file_rows() * self.row_bytes
                self._map = mmap.mmap(self._fd, length, prot=mmap.PROT_READ)
                self._mapped_rows = self.file_rows()
                self._view = np.frombuffer(
                    self._map, dtype=np.uint8, count=self._mapped_rows * self.row_bytes,
                    offset=_HEADER_BYTES).reshape(self._mapped_rows, self.row_bytes)
            return self._view

    def read(self, ids: np.ndarray, n_rows: int, verify: bool = True) -> np.ndarray:
        """Copies of rows ``ids`` (all < ``n_rows``, the snapshot's count) as ``(len, dim)``."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.max() >= n_rows or ids.min() < 0):
            raise CorruptIndexError(
                f"an internal id {int(ids.max())} points past the {n_rows} committed rows; "
                "run `lshdb check`")
        if n_rows == 0 or len(ids) == 0:
            return np.empty((0, self.dim), dtype=self.dtype)
        raw = np.take(self._records(n_rows), ids, axis=0)  # (len, row_bytes) uint8: a copy
        if verify and self.checked:
            bad = np.flatnonzero(self._failing(raw, ids))
            if len(bad):
                raise CorruptIndexError(
                    f"row {int(ids[bad[0]])} of {self.path} fails its checksum "
                    f"({len(bad)} bad rows among {len(ids)} read); run `lshdb check` and "
                    "restore the index from a backup")
        return raw[:, : self.payload_bytes].view(self.dtype)

    def verify(self, ids: np.ndarray, n_rows: int) -> None:
        """Raise :class:`CorruptIndexError` unless every row of ``ids`` (all below
        ``n_rows``) passes its checksum: :meth:`read` without the copy it returns, for the
        few rows a scan answers with."""
        if not self.checked or not len(ids):
            return
        ids = ids.astype(np.int64, copy=False)
        try:  # (a negative id wraps round here, and fails its checksum below)
            words = self._records(n_rows)[:n_rows].take(ids, axis=0).view("<u8")
        except IndexError:
            self.read(ids, n_rows)  # raises, naming the id past the committed rows
            raise
        rest = words @ self._W_check  # (integer arrays wrap silently)
        rest += (ids.view(np.uint64) + np.uint64(1)) * self._W0
        if rest.any():
            self.read(ids, n_rows)  # names the first bad row

    def _failing(self, raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
        words = raw.view("<u8")
        expect = _checksums(words[:, : self._n_words], ids, self._W, self._W0)
        return np.asarray(expect != words[:, self._n_words])

    def damaged(self, ids: np.ndarray, n_rows: int) -> np.ndarray:
        """Which of rows ``ids`` (all < ``n_rows``) fail their checksum, as a bool mask
        (all False in a file without checksums)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.checked or not len(ids):
            return np.zeros(len(ids), dtype=bool)
        if ids.max() >= n_rows or ids.min() < 0:
            raise CorruptIndexError(
                f"an internal id {int(ids.max())} points past the {n_rows} committed rows; "
                "run `lshdb check`")
        return self._failing(np.take(self._records(n_rows), ids, axis=0), ids)

    def matrix(self, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` payloads as one read-only view into the map, ``(n_rows, dim)``
        of the row dtype (strided past the checksums of a checked file), *unverified*: for
        scans, whose callers verify every row they return with :meth:`read`."""
        if n_rows == 0:
            return np.empty((0, self.dim), dtype=self.dtype)
        return self._records(n_rows)[:n_rows, : self.payload_bytes].view(self.dtype)

    def read_range(self, start: int, stop: int, n_rows: int, verify: bool = True) -> np.ndarray:
        return self.read(np.arange(start, stop), n_rows, verify)

    def copy_to(self, dest: str, n_rows: int,
                progress: Callable[[int, int], None] | None = None) -> None:
        """Write the header and the first ``n_rows`` rows to the new file ``dest``, fsynced
        (a backup: rows below a committed count never change)."""
        self.require(n_rows)
        end = _HEADER_BYTES + n_rows * self.row_bytes
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            done = 0
            while done < end:
                chunk = os.pread(self._fd, min(8 << 20, end - done), done)
                if not chunk:
                    raise CorruptIndexError(f"{self.path} ended at byte {done} while "
                                            f"copying {n_rows} rows")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                done += len(chunk)
                if progress:
                    progress(max(0, done - _HEADER_BYTES) // self.row_bytes, n_rows)
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._join_flusher()
        with self._lock:
            self._view = None
            self._map = None  # closed when the last array viewing it goes away
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __repr__(self) -> str:
        return f"RowFile({self.path!r}, dim={self.dim}, dtype={self.dtype.str})"


class RowDerived:
    """A process's array derived from the committed rows of one row file, one column per
    row (the last axis), for scans.

    Rows below a committed count never change within a generation, so the array only
    grows: :meth:`get` derives the rows a newer snapshot has committed (read from the map,
    unverified, like every scan) and returns the first ``n_rows`` columns. Thread-safe; a
    returned array stays valid while a later call extends it. Subclasses say what a row
    becomes (:meth:`derive`).
    """

    lead: tuple[int, ...] = ()
    dtype: np.dtype[Any] = np.dtype(np.float32)

    def __init__(self, file: RowFile) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._state: tuple[np.ndarray, int] = (np.empty((*self.lead, 0), self.dtype), 0)

    @property
    def file(self) -> RowFile:
        """The row file the array is derived from."""
        return self._file

    def derive(self, rows: np.ndarray) -> np.ndarray:
        """The columns of ``rows`` (a ``(m, dim)`` view of the map): ``(*lead, m)``."""
        raise NotImplementedError

    def get(self, n_rows: int) -> np.ndarray:
        cols, n = self._state  # one read: the array and its filled count always agree
        if n_rows > n:
            with self._lock:
                cols, n = self._state
                if n_rows > n:
                    if n_rows > cols.shape[-1]:
                        grown = np.empty((*self.lead, max(n_rows, cols.shape[-1] * 5 // 4)),
                                         dtype=self.dtype)
                        grown[..., :n] = cols[..., :n]
                        cols = grown
                    cols[..., n:n_rows] = self.derive(self._file.matrix(n_rows)[n:n_rows])
                    self._state = (cols, n_rows)
                    n = n_rows
        return cols[..., :n_rows]


class RowNorms(RowDerived):
    """Squared norms of the committed rows (float32), for l2 scans as one product:
    ``|r - x|**2 = |r|**2 - 2 r.x + |x|**2``."""

    def derive(self, rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", rows, rows)
