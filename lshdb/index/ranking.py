"""Exact ranking inside a read snapshot: re-ranking candidates, scans, hash-code pre-filters.

:class:`Ranking` is the part of :class:`~lshdb.index.reader.Reader` that turns candidate
ids into ``[(key, distance)]``: exact distances over verified rows, an optional Hamming
pre-filter on stored hash codes, and exact scans over the mapped rows (one BLAS product
for metrics with a product form).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..hashing.codes import CodeColumns, SimHashCoder, hamming_words, nearest
from ..storage.codec import Key, pack_id
from .blas import for_values

if TYPE_CHECKING:
    from ..metrics import Metric
    from ..storage.rows import RowFile, RowNorms
    from ..storage.store import Store

__all__ = ["Ranking", "SCAN_ROWS"]

SCAN_ROWS = 4096  # rows per block of an exact scan under metrics without a BLAS form


class Ranking:
    """Ranking methods of a read snapshot (mixed into :class:`Reader`, which sets the
    attributes below)."""

    metric: Metric
    n_rows: int
    live: int
    settings: dict[str, Any]
    _store: Store
    _txn: Any
    _rows: RowFile
    _code_cols: CodeColumns | None
    _row_norms: RowNorms | None
    _coder: SimHashCoder | None

    if TYPE_CHECKING:
        def key_of(self, i: int) -> Key: ...

    def _scan(self, scan: bool | None) -> bool:
        return bool(scan if scan is not None else self.settings.get("scan"))

    def _code_words(self, x: np.ndarray) -> np.ndarray | None:
        """The query's hash code as uint64 words (None before any code is stored)."""
        if self._coder is None:
            return None
        return self._coder.encode(x[None])[0].view("<u8")

    def _rank_scan_batch(self, X: np.ndarray, k: int,
                         rerank: int | None) -> list[list[tuple[Key, float]]]:
        """Exact scans of many queries, one product per block of queries (at most 2**24
        distances at a time)."""
        step = max(1, (1 << 24) // self.n_rows)
        out: list[list[tuple[Key, float]]] = []
        for s in range(0, len(X), step):
            block = X[s : s + step]
            D = self._product_distances(block)
            out += [self._rank_scan(x, k, rerank, d) for x, d in zip(block, D)]
        return out

    def _product_distances(self, Q: np.ndarray) -> np.ndarray:
        """``(len(Q), n_rows)`` distances as one product over the map (cosine: rows are
        stored normalised; l2: through the rows' squared norms, kept per process). l2's
        expansion loses precision to cancellation: scans take extra rows for it, and the
        rows they return get exact distances (:meth:`_nearest_live`, :meth:`_rank`)."""
        M = self._rows.matrix(self.n_rows)
        with for_values(M.size * len(Q)):  # large enough for OpenBLAS's threads to pay
            P = Q @ M.T
        norms = self._row_norms.get(self.n_rows) if self._row_norms is not None else None
        return self.metric.product_distances(P, Q, norms)

    def _rank_scan(self, x: np.ndarray, k: int, rerank: int | None,
                   d: np.ndarray | None = None) -> list[tuple[Key, float]]:
        """Rank every stored item: by the Hamming distance of its code (then re-rank the
        best ``rerank`` exactly), or, without codes, by its exact distance (``d``, when a
        batch computed it already)."""
        if self.n_rows == 0:
            return []
        deleted = self.n_rows - self.live
        if self._code_cols is None:
            if d is None:
                d = self._scan_distances(x)
            extra = self.metric.scan_margin(k)
            return self._rank(x, self._nearest_live(d, k, deleted, extra), k,
                              rerank=self.n_rows)
        q = self._code_words(x)
        if q is None:
            return []
        R = rerank if rerank is not None else self.settings.get("rerank")
        R = max(k, 100 if R is None else R)
        best = nearest(hamming_words(self._code_cols.get(self.n_rows), q), R + deleted)
        if deleted:
            best = self._live(best)
        return self._rank(x, best, k, rerank=len(best))

    def _live(self, ids: np.ndarray) -> np.ndarray:
        """The ids among ``ids`` that hold a live item in this snapshot (in order)."""
        db = self._store.db(b"id2key")
        get = self._txn.get
        return np.array([i for i in ids.tolist() if get(pack_id(i), db=db) is not None],
                        dtype=np.int64)

    def _nearest_live(self, d: np.ndarray, k: int, deleted: int, extra: int = 0
                      ) -> np.ndarray:
        """Row numbers holding the ``k`` nearest live items by ``d`` (and ``extra`` more,
        for distances that are not exact): the nearest rows are taken a few more than
        needed at a time (four times as many on each retry) until ``k + extra`` of them
        are live, so deleted rows cost a look-up only when they are that near."""
        n = len(d)
        k = k + extra
        take = min(n, k + min(deleted, 2 * k + 16))
        while True:
            best = np.sort(np.argpartition(d, take - 1)[:take]) if take < n else np.arange(n)
            if not deleted:
                return best
            live = self._live(best)
            if len(live) >= k or take == n:
                return live
            take = min(n, 4 * take)

    def _blas_scan(self) -> bool:
        """A metric with a product form over float rows (not stored codes)."""
        return self.metric.product_form and self._rows.dtype == np.float32

    def _scan_distances(self, x: np.ndarray) -> np.ndarray:
        """The distance from ``x`` to every committed row, read from the map unverified:
        the rows a scan returns are read again, checksummed, by :meth:`_rank`. Cosine and
        l2 take one BLAS product over the map (:meth:`_product_distances`); other metrics
        go in blocks."""
        if self._blas_scan():
            return self._product_distances(x[None])[0]
        M = self._rows.matrix(self.n_rows)
        return np.concatenate([self.metric.distances(M[s : s + SCAN_ROWS], x)
                               for s in range(0, len(M), SCAN_ROWS)])

    def _rank(self, x: np.ndarray, ids: np.ndarray, k: int,
              rerank: int | None = None) -> list[tuple[Key, float]]:
        if len(ids) == 0:
            return []
        if self._code_cols is not None:
            R = rerank if rerank is not None else self.settings.get("rerank")
            R = max(k, 100 if R is None else R)
            q = self._code_words(x) if R and len(ids) > R else None
            if q is not None:  # rank by Hamming distance of the codes, keep the best R
                cols = self._code_cols.gather(ids, self.n_rows)
                ids = ids[nearest(hamming_words(cols, q), R)]
        rows = self._rows.read(ids, self.n_rows)
        d = self.metric.distances(rows, x)
        if len(ids) > k:
            top = np.argpartition(d, k - 1)[:k]
        else:
            top = np.arange(len(ids))
        top = top[np.lexsort((ids[top], d[top]))]
        return [(self.key_of(int(ids[j])), float(d[j])) for j in top]
