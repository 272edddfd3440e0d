"""Hash codes: a compact SimHash code per item, to rank candidates cheaply.

With ``codes=B`` an index stores, beside each vector, a B-bit code: bit j is
``[(x - c) . p_j > 0]`` for Gaussian directions ``p_j`` and a centre ``c`` (zero under
cosine; the mean of the first batch under l2). The Hamming distance between two codes
estimates the angle between the (centred) vectors: ``E[hamming] = B * theta / pi``.
Queries rank their candidates by Hamming distance (XOR + popcount over ``B/8`` bytes per
candidate instead of the whole vector) and re-rank only the best ``rerank`` of them exactly.

Codes live in ``codes.bin``, a row file like ``rows.bin`` (same append protocol, checksums
and compaction); the directions and the centre are stored in the ``codes`` meta record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codec import decode_array, encode_array
from .errors import CorruptIndexError, InvalidParameterError
from .families import Projection

__all__ = ["SimHashCoder", "CODES_NAME", "hamming"]

CODES_NAME = "codes.bin"


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
