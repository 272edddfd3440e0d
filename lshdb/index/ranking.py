"""Exact ranking inside a read snapshot: re-ranking candidates, scans, hash-code pre-filters.

:class:`Ranking` is the part of :class:`~lshdb.index.reader.Reader` that turns candidate
ids into ``[(key, distance)]``: exact distances over verified rows, an optional Hamming
pre-filter on stored hash codes, and exact scans over the mapped rows (one BLAS product
for metrics with a product form).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LshdbError
from ..hashing.codes import CodeColumns, SimHashCoder, hamming_block, hamming_words, nearest
from ..storage.codec import Key, pack_id, unpack_keys
from .blas import PARALLEL_VALUES, parallel

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
    _key_cur: tuple[Any, Any] | None

    if TYPE_CHECKING:
        def key_of(self, i: int) -> Key: ...

    def _scan(self, scan: bool | None) -> bool:
        return bool(scan if scan is not None else self.settings.get("scan"))

    def _rerank(self, rerank: int | None) -> int | None:
        """The re-rank count of a query: its own, else the stored one. A count the
        calibration chose (``rerank_for``: the count and the live rows it was chosen for)
        grows with the live rows, until the next retune: the rank of a true neighbour among
        the codes grows with their number."""
        if rerank is not None:
            return rerank
        R = self.settings.get("rerank")
        chosen = self.settings.get("rerank_for")
        if R and chosen and chosen[0] == R and self.live > chosen[1]:
            return -(-R * self.live // chosen[1])  # type: ignore[no-any-return]
        return R  # type: ignore[no-any-return]

    def _code_words(self, x: np.ndarray) -> np.ndarray | None:
        """The query's hash code as uint64 words (None before any code is stored)."""
        if self._coder is None:
            return None
        return self._coder.encode_one(x)

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

    def _rank_codes_batch(self, X: np.ndarray, k: int,
                          rerank: int | None) -> list[list[tuple[Key, float]]]:
        """Code scans of many queries (no deleted rows): their codes in one encoding, the
        Hamming distances of a block of queries in one pass over the codes, their exact
        re-ranks in one product."""
        if self._code_cols is None or self._coder is None:
            raise LshdbError("this index keeps no hash codes to scan; query it without "
                             "scan=True or create it with codes")
        R = self._rerank(rerank)
        R = min(max(k, 100 if R is None else R), self.n_rows)
        cols = self._code_cols.get(self.n_rows)
        Qw = self._coder.encode(X).view("<u8")
        M = self._rows.matrix(self.n_rows)
        step = max(1, (1 << 20) // max(self.n_rows, 1))  # bounded (b, n) temporaries
        out: list[list[tuple[Key, float]]] = []
        for s in range(0, len(X), step):
            H = hamming_block(cols, Qw[s : s + step])
            best = np.stack([nearest(h, R) for h in H])
            d = self.metric.distances_each(M[best], X[s : s + step])
            out += [self._ranked(b, e, k) for b, e in zip(best, d)]
        return out

    def _product_distances(self, Q: np.ndarray) -> np.ndarray:
        """``(len(Q), n_rows)`` distances as one product over the map (cosine: rows are
        stored normalised; l2: through the rows' squared norms, kept per process). l2's
        expansion loses precision to cancellation: scans take extra rows for it, and the
        rows they return get exact distances (:meth:`_nearest_live`, :meth:`_rank`)."""
        M = self._rows.matrix(self.n_rows)
        if M.size * len(Q) < PARALLEL_VALUES:
            P = Q @ M.T
        else:
            with parallel():  # large enough for OpenBLAS's threads to pay
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
            if self.metric.product_exact and self._blas_scan():  # d is the distance
                ids = self._nearest_live(d, k, deleted)
                return self._ranked(ids, d[ids], k)
            extra = self.metric.scan_margin(k)
            return self._rank(x, self._nearest_live(d, k, deleted, extra), k,
                              rerank=self.n_rows)
        q = self._code_words(x)
        if q is None:
            return []
        R = self._rerank(rerank)
        R = max(k, 100 if R is None else R)
        best = nearest(hamming_words(self._code_cols.get(self.n_rows), q), R + deleted)
        if deleted:
            best = self._live(best)
        return self._rank(x, best, k, rerank=len(best), verify_all=False)

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
            best = nearest(d, take)
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
              rerank: int | None = None, verify_all: bool = True) -> list[tuple[Key, float]]:
        """The ``k`` nearest of candidates ``ids`` by exact distance. Their rows are read
        with their checksums, or (``verify_all=False``, a scan's re-rank) from the map and
        only the rows returned are checksummed, as an exact scan does."""
        if len(ids) == 0:
            return []
        if self._code_cols is not None:
            R = self._rerank(rerank)
            R = max(k, 100 if R is None else R)
            q = self._code_words(x) if R and len(ids) > R else None
            if q is not None:  # rank by Hamming distance of the codes, keep the best R
                cols = self._code_cols.gather(ids, self.n_rows)
                ids = ids[nearest(hamming_words(cols, q), R)]
        if verify_all:
            rows = self._rows.read(ids, self.n_rows)
        else:
            rows = self._rows.read(ids, self.n_rows, verify=False)
        return self._ranked(ids, self.metric.distances(rows, x), k, verify=not verify_all)

    def _ranked(self, ids: np.ndarray, d: np.ndarray, k: int,
                verify: bool = True) -> list[tuple[Key, float]]:
        """The ``k`` best of ``ids`` by their distances ``d`` (ties: lower id first), with
        their keys; ``verify``: checksum the rows returned (read unverified so far)."""
        if len(ids) > k:
            top = np.argpartition(d, k - 1)[:k]
            top = top[np.lexsort((ids[top], d[top]))]
        else:
            top = np.lexsort((ids, d))
        best = ids[top]
        if verify:
            self._rows.verify(best, self.n_rows)  # raises on a damaged row
        return list(zip(self._keys_of(best.tolist()), d[top].tolist()))

    def _key_cursors(self) -> tuple[Any, Any]:
        """Cursors on ``id2key`` and ``key2id``, opened once per snapshot."""
        cur = self._key_cur
        if cur is None:
            store, txn = self._store, self._txn
            cur = self._key_cur = (txn.cursor(store.db(b"id2key")),
                                   txn.cursor(store.db(b"key2id")))
        return cur

    def _keys_of(self, ids: list[int]) -> list[Key]:
        """:meth:`key_of` for each id, with the same cross-checks: one look-up of all the
        ids, one of all their keys."""
        i2k, k2i = self._key_cursors()
        packed = [pack_id(i) for i in ids]
        found = i2k.getmulti(packed)
        raws = [raw for _, raw in found]
        if len(found) != len(ids) or [i for _, i in k2i.getmulti(raws)] != packed:
            return [self.key_of(i) for i in ids]  # names the problem
        return unpack_keys(raws)
