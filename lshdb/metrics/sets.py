"""Sets and documents in the index: the ``jaccard`` metric and MinHash banding.

An item is either a **document** (a ``str``, shingled as the index says, e.g. ``word:5``) or
a **set of tokens** (any other iterable of ``str``, ``bytes`` or ``int``), or, for callers
who bring their own, a ready **signature** (a row of a 2-D unsigned array, e.g. datasketch's
``MinHash.hashvalues`` in ``mode="classic"``). The stored row is the item's MinHash
signature of ``num_perm`` values; the tables are ``b`` bands of ``r`` rows, each band's
values hashed to one 8-byte bucket key. ``(b, r)`` come from the index's threshold through
:func:`lshdb.theory.optimal_bands` (as datasketch chooses them), unless given.

Scores are Jaccard similarities: estimated from the signatures (the fraction of equal
columns), or exact when the index stores each item's token hashes (``store_tokens=True``).

Token hashing: in ``mode="oph"`` a ``str`` token is hashed like a shingle (64-bit, of its
UTF-8 bytes), a ``bytes`` token likewise over its bytes, an ``int`` token is mixed
(splitmix64); in ``mode="classic"`` tokens are hashed as datasketch hashes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError
from ..hashing.families import mix64
from ..hashing.minhash import classic_signatures_csr, oph_signatures
from ..hashing.shingles import hash_strings, parse_shingle, shingle_hashes, shingle_token_hashes
from ..hashing.theory import optimal_bands
from .dense import Metric, check_k

__all__ = ["JaccardMetric", "jaccard_defaults", "describe_sets"]

_CSR = tuple[np.ndarray, np.ndarray]
DEFAULT_SEED = {"oph": 0, "classic": 1}  # classic: datasketch's MinHash(seed=1)


def jaccard_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """Fill the jaccard options: num_perm, threshold, mode, seed, scheme, shingle, bands,
    rows. The seed is stored even when left out, so that the index states it: 0, or 1
    under ``mode="classic"`` (datasketch's default, so that its signatures match)."""
    out = dict(options)
    out.setdefault("num_perm", 128)
    out.setdefault("threshold", 0.5)
    out.setdefault("mode", "oph")
    out.setdefault("seed", DEFAULT_SEED[out["mode"]])
    out.setdefault("scheme", "affine32")
    out.setdefault("shingle", "word:5")
    out.setdefault("store_tokens", False)
    if ("bands" in out) != ("rows" in out):
        raise InvalidParameterError("give both bands and rows, or neither")
    if "bands" not in out:
        out["bands"], out["rows"] = optimal_bands(out["threshold"], out["num_perm"])
    if out["bands"] * out["rows"] > out["num_perm"]:
        raise InvalidParameterError(
            f"bands x rows = {out['bands'] * out['rows']} exceeds num_perm {out['num_perm']}")
    return out


class JaccardMetric(Metric):
    """Items -> MinHash signature rows; scores are Jaccard similarities."""

    name = "jaccard"
    score_field = "jaccard"
    is_set = True
    takes_dim = False  # num_perm instead
    families = ("minhash",)

    @classmethod
    def default_tables(cls, options: dict[str, Any]) -> int:
        return int(jaccard_defaults(options)["bands"])

    def __init__(self, options: dict[str, Any]) -> None:
        opts = jaccard_defaults(options)
        super().__init__(int(opts["num_perm"]))
        self.options = opts
        self.mode = opts["mode"]
        self.scheme = opts["scheme"]
        self.seed = int(opts["seed"])
        self.kind, self.n = parse_shingle(opts["shingle"])
        wide = self.mode == "classic" and self.scheme != "affine32"
        self.row_dtype = np.dtype("<u8" if wide else "<u4")

    def check_k(self, k: int | None, threshold: float | None) -> None:
        """Validate a query's ``k``: an int >= 1, or None for every item above the
        threshold."""
        if k is not None:
            check_k(k)

    def check_threshold(self, threshold: Any) -> None:
        """Validate ``threshold``: a Jaccard similarity in [0, 1]."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InvalidParameterError(f"threshold must be in [0, 1]; found {threshold!r}")

    def stored_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return dict(self.options)  # defaults filled in; num_perm = dim if given

    def signatures(self, csr: _CSR) -> np.ndarray:
        offsets, hashes = csr
        if self.mode == "classic":
            return classic_signatures_csr(offsets, hashes, self.dim, self.seed, self.scheme)
        return oph_signatures(offsets, hashes, self.dim, self.seed)

    def tokens(self, items: list[Any], what: str) -> _CSR:
        """Distinct token hashes of each item, in CSR form (documents are shingled)."""
        kinds = [isinstance(it, str) for it in items]
        if all(kinds):
            if self.mode == "classic":
                return shingle_token_hashes(items, self.kind, self.n,
                                            width=32 if self.scheme != "affine64" else 64)
            return shingle_hashes(items, self.kind, self.n)
        parts: list[np.ndarray] = []
        for i, it in enumerate(items):
            if isinstance(it, str):
                parts.append(self.tokens([it], what)[1])
                continue
            if isinstance(it, (bytes, bytearray, dict)) or not isinstance(it, Iterable):
                raise InvalidVectorError.at_row(
                    what, i, f"is a {type(it).__name__}; an item is a document (str) or a set "
                    "of tokens (str, bytes or int)", "item")
            parts.append(self._hash_tokens(list(it), what, i))
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in parts])
        hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
        return offsets, hashes

    def _hash_tokens(self, toks: list[Any], what: str, i: int) -> np.ndarray:
        if self.mode == "classic":
            from ..hashing.minhash_classic import token_hash

            wide = self.scheme != "affine32"
            h = np.array([token_hash(t, wide, what, i, "item") for t in toks], dtype=np.uint64)
            return np.unique(h)
        strs = [t for t in toks if isinstance(t, str)]
        rest = [t for t in toks if not isinstance(t, str)]
        out = [hash_strings(strs)] if strs else []
        for t in rest:
            if isinstance(t, (bytes, bytearray)):
                out.append(hash_strings([bytes(t).decode("latin-1")]) ^ np.uint64(0x9E3779B97F4A7C15))
            elif isinstance(t, (int, np.integer)) and not isinstance(t, bool):
                out.append(mix64(np.array([int(t) % 2**64], dtype=np.uint64)))
            else:
                raise InvalidVectorError.at_row(
                    what, i, f"holds a {type(t).__name__} token; tokens are str, bytes or int",
                    "item")
        return np.unique(np.concatenate(out)) if out else np.empty(0, dtype=np.uint64)

    def prepare_items(self, items: Any, what: str = "items") -> tuple[np.ndarray, _CSR | None]:
        """Signature rows of a batch, and (documents and token sets only) their token CSR."""
        if isinstance(items, np.ndarray) and items.ndim == 2:
            return self._signature_rows(items, what), None
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise InvalidVectorError(
                f"{what} must be a list of documents (str) or token sets, or a 2-D array of "
                "signatures")
        seq = list(items)
        if not seq:
            raise InvalidVectorError(f"{what}: the batch is empty; pass at least one item")
        csr = self.tokens(seq, what)
        sizes = np.diff(csr[0])
        if (sizes == 0).any():
            i = int(np.flatnonzero(sizes == 0)[0])
            raise InvalidVectorError.at_row(
                what, i, "has no tokens (an empty document or set has no MinHash)", "item")
        return self.signatures(csr).astype(self.row_dtype, copy=False), csr

    def _signature_rows(self, A: np.ndarray, what: str) -> np.ndarray:
        if self.mode != "classic":
            # a signature made elsewhere cannot be told from one made with other hashes or
            # another seed: it would be stored, and documents would never meet it
            raise InvalidParameterError(
                f"{what}: this index (mode 'oph') makes its own signatures and takes no ready "
                "signatures: give documents or token sets, or create an index with "
                "mode='classic' and the signatures' seed (seed=1 for datasketch's MinHash) "
                "to bring datasketch signatures")
        if A.dtype.kind not in "ui":
            raise InvalidVectorError(f"{what}: signatures must be unsigned integers; found {A.dtype}")
        if A.shape[1] != self.dim:
            raise InvalidVectorError(
                f"{what}: signatures have {A.shape[1]} values; this index uses num_perm={self.dim}")
        if len(A) == 0:
            raise InvalidVectorError(f"{what}: the batch is empty; pass at least one item")
        if (A.dtype.kind == "i" and A.min() < 0) \
                or (self.row_dtype.itemsize == 4 and A.max() > 0xFFFFFFFF):
            raise InvalidVectorError(f"{what}: signature values out of range for {self.row_dtype}")
        return np.ascontiguousarray(A, dtype=self.row_dtype)

    def prepare(self, X: Any, what: str = "items") -> np.ndarray:
        return self.prepare_items(X, what)[0]

    def prepare_one(self, x: Any, what: str = "query") -> np.ndarray:
        return self.prepare_query(x, what)[0]

    def prepare_query(self, x: Any, what: str = "query") -> tuple[np.ndarray, np.ndarray | None]:
        """A query's signature row and (unless a signature was given) its token hashes."""
        if isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "ui" \
                and len(x) == self.dim:
            return self._signature_rows(x[None, :], what)[0], None
        rows, csr = self.prepare_items([x], what)
        return rows[0], (csr[1] if csr is not None else None)

    def row_dim(self) -> int:
        return self.dim

    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """1 - estimated Jaccard similarity."""
        return 1.0 - (rows == q).mean(axis=1, dtype=np.float64)


def describe_sets(metric: Metric) -> dict[str, Any]:
    """What a jaccard index's items are made of (its stats show this in place of ``dim``)."""
    m = metric
    if not isinstance(m, JaccardMetric):
        return {"dim": m.dim}
    return {"num_perm": m.dim, "mode": m.mode, "seed": m.seed,
            "threshold": m.options["threshold"], "shingle": m.options["shingle"],
            "store_tokens": bool(m.options.get("store_tokens"))}
