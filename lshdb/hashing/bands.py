"""MinHash banding as a hash family: ``L = b`` tables (bands) of ``k = r`` signature values,
each band hashed to one 8-byte bucket key."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import CorruptIndexError, InvalidParameterError
from ..storage.codec import decode_array, encode_array
from .families import Family
from .minhash import band_keys

__all__ = ["MinHashBands"]


class MinHashBands(Family):
    """Banding of MinHash signatures: ``L = b`` tables of ``k = r`` signature values."""

    name = "minhash"
    metric = "jaccard"
    max_k: ClassVar[int] = 1024

    def __init__(self, dim: int, k: int, L: int, seed: int = 0) -> None:
        super().__init__(dim, k, L, seed)
        if k * L > dim:
            raise InvalidParameterError(f"{L} bands of {k} rows exceed num_perm {dim}")

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return band_keys(np.asarray(X), self.L, self.k, seed=self.seed)

    def probe(self, x: np.ndarray, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(self.L), self.hash(x[None, :])[0]  # bands are not multi-probed

    def params(self) -> dict[str, Any]:
        return {**super().params(), "check": encode_array(np.array([self.dim, self.k, self.L]))}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bands": self.L, "rows": self.k}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> MinHashBands:
        check = decode_array(p["check"], "band shape")
        if check.tolist() != [dim, p["k"], p["L"]]:
            raise CorruptIndexError("stored band parameters disagree with num_perm")
        return cls(dim, p["k"], p["L"], p["seed"])
