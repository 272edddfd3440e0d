"""Hash codes: a compact SimHash code per item, to rank candidates cheaply.

With ``codes=B`` an index stores a B-bit code beside each vector (``codes.bin``, layout in
docs/format.md, "Hash codes"); queries rank candidates by Hamming distance and re-rank only
the best ``rerank`` exactly. For scans each process keeps a word-major copy of the codes
(:class:`CodeColumns`): XOR and popcount then run over long contiguous arrays, where numpy's
per-row loops over 8 words would cost more than the arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptIndexError, InvalidParameterError
from ..storage.codec import decode_array, encode_array
from ..storage.rows import RowDerived, RowFile
from .families import Projection

__all__ = ["SimHashCoder", "CODES_NAME", "CodeColumns", "hamming", "hamming_words",
           "hamming_block", "nearest"]

CODES_NAME = "codes.bin"
_SCAN_BLOCK = 1 << 16  # codes per step of a scan


def hamming(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamming distance from each packed code row to the packed code ``q``.

    ``codes`` may be a strided view (rows of a row file): only its last axis must be
    contiguous. Words are XOR-ed and popcounted 64 bits at a time and the per-word counts
    summed column by column (numpy's reductions over a short last axis are slow).
    """
    if codes.shape[1] % 8 == 0 and codes.strides[1] == 1:
        words = codes.view("<u8")
        counts = np.bitwise_count(words ^ np.ascontiguousarray(q).view("<u8"))
    else:
        counts = np.bitwise_count(np.ascontiguousarray(codes) ^ q)
    total = counts[:, 0].astype(np.int64)
    for j in range(1, counts.shape[1]):
        total += counts[:, j]
    return total


def hamming_words(cols: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamming distance from each word-major code to the packed code ``q``.

    ``cols`` is ``(words, n)`` uint64 (word ``j`` of every code in row ``j``, each row
    contiguous) and ``q`` the query's ``words`` uint64 words; returns ``(n,)`` uint16.
    Codes are taken ``_SCAN_BLOCK`` at a time, so the temporaries stay small.
    """
    words, n = cols.shape
    total = np.empty(n, dtype=np.uint16)
    qc = np.ascontiguousarray(q, dtype=np.uint64)[:, None]
    for s in range(0, n, _SCAN_BLOCK):
        block = np.bitwise_count(np.bitwise_xor(cols[:, s : s + _SCAN_BLOCK], qc))
        out = total[s : s + _SCAN_BLOCK]
        # three words' counts (at most 192) add up in uint8, cheaper than casting each
        for j in range(0, words, 3):
            part = block[j]
            if j + 1 < words:
                part = np.add(part, block[j + 1])
                if j + 2 < words:
                    np.add(part, block[j + 2], out=part)
            if j == 0:
                out[:] = part
            else:
                np.add(out, part, out=out)
    return total


def hamming_block(cols: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """:func:`hamming_words` for a block of queries at once: ``Q`` is ``(b, words)`` uint64,
    the result ``(b, n)`` uint16."""
    total = np.zeros((len(Q), cols.shape[1]), dtype=np.uint16)
    for j in range(cols.shape[0]):
        total += np.bitwise_count(np.bitwise_xor(cols[j][None, :], Q[:, j, None]))
    return total


def nearest(h: np.ndarray, R: int) -> np.ndarray:
    """Positions of the ``R`` smallest values of ``h`` (Hamming distances, or the float
    distances of an exact scan), in ascending order; among equal values the lowest
    positions win.

    A strided sample of ``h`` gives a cut-off that keeps a few times ``R`` positions in
    one pass (with a margin of four standard deviations of the sample's count; when it
    keeps too few, the whole of ``h`` is used instead); the exact ``R`` are chosen among
    those. About three times as fast as ``argpartition`` on 20,000 distances.
    """
    n = len(h)
    if R >= n:
        return np.arange(n)
    if R <= 0:
        return np.arange(0)
    step = n // (16 * R)
    if step > 1:
        sample = h[::step]
        expect = R / step  # sample values expected below the R-th smallest of h
        rank = min(len(sample) - 1, int(expect + 4.0 * expect**0.5) + 1)
        out = np.flatnonzero(h <= np.partition(sample, rank)[rank])
        if len(out) < R:
            out = np.arange(n)
    else:
        out = np.arange(n)
    sub = h[out]
    cut = np.partition(sub, R - 1)[R - 1]
    keep = sub <= cut
    extra = int(np.count_nonzero(keep)) - R  # surplus, all at the cut: drop the last ones
    if extra:
        at = np.flatnonzero(sub == cut)
        keep[at[len(at) - extra :]] = False
    return out[keep]


class CodeColumns(RowDerived):
    """A process's word-major copy of the committed codes of one ``codes.bin`` (for scans),
    and word-major reads of a few rows (for ranking candidates). :meth:`get` returns the
    first ``n_rows`` codes as ``(words, n_rows)`` uint64 (see :class:`RowDerived`).
    """

    dtype = np.dtype(np.uint64)

    def __init__(self, file: RowFile) -> None:
        self.lead = (file.padded_bytes // 8,)
        super().__init__(file)

    def derive(self, rows: np.ndarray) -> np.ndarray:
        return rows.view("<u8").T  # uint8 rows as words, word-major

    def gather(self, ids: np.ndarray, n_rows: int) -> np.ndarray:
        """The codes of rows ``ids`` (all below ``n_rows``) as ``(words, len(ids))``, read
        from the file: one gather of whole rows costs less than one per word when the rows
        are scattered over a large file, and needs no copy of all the codes."""
        rows = self._file.read(ids, n_rows).view("<u8")
        return np.ascontiguousarray(rows.T)


class SimHashCoder:
    """B-bit SimHash codes of ``dim``-dimensional vectors (about a fixed centre)."""

    def __init__(self, dim: int, bits: int, seed: int = 0, centre: np.ndarray | None = None,
                 P: np.ndarray | None = None) -> None:
        if bits % 64 or not 64 <= bits <= 4096:
            raise InvalidParameterError(f"codes must be a multiple of 64 in 64..4096 bits; found {bits}")
        self.dim = dim
        self.bits = bits
        self.seed = seed
        if P is None:
            P = np.random.default_rng(seed + 0xC0DE).standard_normal((dim, bits))
        if P.shape != (dim, bits):
            raise CorruptIndexError(f"code directions have shape {P.shape}; expected {(dim, bits)}")
        self.P = np.ascontiguousarray(P, dtype=np.float32)
        self._project = Projection(self.P)
        self.centre = np.zeros(dim, dtype=np.float32) if centre is None else \
            np.asarray(centre, dtype=np.float32)
        if self.centre.shape != (dim,):
            raise CorruptIndexError("the code centre has the wrong dimension")
        self._centred = bool(self.centre.any())  # (x - 0 is x: skipped for a query)

    @property
    def nbytes(self) -> int:
        return self.bits // 8

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Packed codes of the rows of ``X``: ``(n, bits / 8)`` uint8."""
        out = np.empty((len(X), self.nbytes), dtype=np.uint8)
        for s in range(0, len(X), 32768):
            block = np.asarray(X[s : s + 32768], dtype=np.float32) - self.centre
            out[s : s + 32768] = np.packbits(self._project.signs(block), axis=1)
        return out

    def encode_one(self, x: np.ndarray) -> np.ndarray:
        """The code of one float32 vector as uint64 words (``encode(x[None])[0]``)."""
        if self._centred:
            x = x - self.centre
        elif x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        return np.packbits(self._project.signs_one(x)).view("<u8")

    def params(self) -> dict[str, Any]:
        return {"bits": self.bits, "seed": self.seed, "P": encode_array(self.P),
                "centre": encode_array(self.centre)}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> SimHashCoder:
        try:
            return cls(dim, int(p["bits"]), int(p["seed"]), centre=decode_array(p["centre"]),
                       P=decode_array(p["P"]))
        except (KeyError, TypeError) as exc:
            raise CorruptIndexError(f"the codes record is malformed: {exc}") from exc
