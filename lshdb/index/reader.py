"""Reads inside one LMDB snapshot: candidate retrieval, exact re-ranking, key look-ups.

A :class:`Reader` sees the committed state of the moment it began, however long it lives
and whatever writers do meanwhile. It is not shared between threads; take one per thread
(``with index.reader() as r``), or call the Index's one-shot methods, which take their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptIndexError, InvalidParameterError, KeyNotFoundError
from ..hashing.codes import CodeColumns, SimHashCoder, hamming_words, nearest
from ..hashing.families import Family
from ..hashing.registry import family_from_params
from ..storage import postings, runs
from ..storage.codec import (
    Key,
    bucket_bytes,
    decode_many,
    normalize_key,
    pack_id,
    pack_key,
    unpack_id,
    unpack_key,
    unpack_meta,
)
from ..storage.store import table_name
from .blas import for_values
from .idsets import repeated, union
from .sets import rank_sets
from .stats import snapshot_stats

if TYPE_CHECKING:
    from ..storage.rows import RowFile, RowNorms
    from ..storage.store import Store
    from .handle import Index

__all__ = ["Reader"]

_SCAN_ROWS = 4096  # rows per block of an exact scan under metrics without a BLAS form


class Reader:
    """A read snapshot of an index.

    Not shared between threads. Besides the public queries and look-ups, lshdb's
    maintenance code (check, backup) reads a snapshot through a small internal interface,
    described in ``docs/internals.md``: :attr:`index`, :attr:`txn`, :attr:`store`,
    :attr:`rows`, :attr:`codes`, :attr:`norms`, and the plain attributes ``n_rows``,
    ``live``, ``state``, ``family``, ``settings`` and ``metric``.
    """

    def __init__(self, index: Index, store: Store, rows: RowFile, txn: Any,
                 codes: CodeColumns | None = None, norms: RowNorms | None = None) -> None:
        self._index = index
        self._store = store
        self._rows = rows
        self._txn = txn
        self._code_cols = codes
        self._row_norms = norms
        raw = txn.get(b"state", db=store.db(b"meta"))
        if raw is None:
            raise CorruptIndexError("meta record 'state' is missing; the index is damaged")
        state = unpack_meta(raw, "state")
        self.state: dict[str, Any] = state
        self.n_rows: int = int(state["rows"])
        self.live: int = int(state["live"])
        self.retired_to: str | None = state.get("retired_to")
        self._runs: runs.RunSet | None = \
            store.runs_cache.snapshot(txn, store.db(b"meta")) if state.get("runs") else None
        self.metric = index.metric
        family = index.family
        if family is None:  # calibrated since this handle opened? (another process)
            fam_raw = txn.get(b"family", db=store.db(b"meta"))
            if fam_raw is not None:
                family = family_from_params(self.metric.hash_dim(), unpack_meta(fam_raw, "family"))
                index.settings = unpack_meta(txn.get(b"settings", db=store.db(b"meta")),
                                             "settings")
                index.family = family
        self.family: Family | None = family
        coder = index.coder
        if coder is None and codes is not None:  # first codes committed since this handle opened?
            codes_raw = txn.get(b"codes", db=store.db(b"meta"))
            if codes_raw is not None:
                coder = SimHashCoder.from_params(self.metric.dim, unpack_meta(codes_raw, "codes"))
        self._coder: SimHashCoder | None = coder if codes is not None else None
        self.settings = index.settings
        self._cursors: dict[int, Any] = {}

    # -- the internal interface (docs/internals.md) ------------------------------------
    @property
    def index(self) -> Index:
        """The handle this snapshot was taken from."""
        return self._index

    @property
    def txn(self) -> Any:
        """The LMDB read transaction of this snapshot."""
        return self._txn

    @property
    def store(self) -> Store:
        """The :class:`~lshdb.storage.store.Store` of the snapshot's generation."""
        return self._store

    @property
    def rows(self) -> RowFile:
        """The row file of the snapshot's generation (rows below ``n_rows`` are fixed)."""
        return self._rows

    @property
    def codes(self) -> CodeColumns | None:
        """The stored hash codes, by column, if the index keeps codes beside its rows."""
        return self._code_cols

    @property
    def norms(self) -> RowNorms | None:
        """The rows' squared norms, for metrics that need them in scans."""
        return self._row_norms

    # -- keys ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.live

    def __contains__(self, key: object) -> bool:
        try:
            packed = pack_key(normalize_key(key))
        except Exception:
            return False
        return self._txn.get(packed, db=self._store.db(b"key2id")) is not None

    def id_of(self, key: Key) -> int:
        raw = self._txn.get(pack_key(normalize_key(key)), db=self._store.db(b"key2id"))
        if raw is None:
            raise KeyNotFoundError(f"key {key!r} is not in the index")
        return unpack_id(raw)

    def key_of(self, i: int) -> Key:
        """The key of internal id ``i``, cross-checked against ``key2id``."""
        raw = self._txn.get(pack_id(i), db=self._store.db(b"id2key"))
        if raw is None:
            raise CorruptIndexError(
                f"internal id {i} is in a posting list but has no key; run `lshdb check`")
        back = self._txn.get(raw, db=self._store.db(b"key2id"))
        if back is None or unpack_id(back) != i:
            raise CorruptIndexError(
                f"the key maps disagree about internal id {i}; run `lshdb check`")
        return unpack_key(raw)

    def keys(self) -> Iterator[Key]:
        """Every key of this snapshot in internal-id order, one at a time (``Index.keys()``
        returns a list: its snapshot ends with the call, a reader's lasts)."""
        for _, key in self.items():
            yield key

    def items(self) -> Iterator[tuple[int, Key]]:
        """(internal id, key) pairs in id order, each cross-checked against ``key2id``."""
        k2i = self._store.db(b"key2id")
        for k, v in self._txn.cursor(self._store.db(b"id2key")):
            i = unpack_id(k)
            back = self._txn.get(v, db=k2i)
            if back is None or unpack_id(back) != i:
                raise CorruptIndexError(
                    f"the key maps disagree about internal id {i}; run `lshdb check`")
            yield i, unpack_key(v)

    def get(self, key: Key) -> np.ndarray:
        i = self.id_of(key)
        if self.key_of(i) != normalize_key(key):
            raise CorruptIndexError(f"the key maps disagree about key {key!r}; run `lshdb check`")
        return self._rows.read(np.array([i]), self.n_rows)[0].copy()

    # -- candidates ------------------------------------------------------------------
    def _cursor(self, t: int) -> Any:
        c = self._cursors.get(t)
        if c is None:
            c = self._cursors[t] = self._txn.cursor(self._store.db(table_name(t)))
        return c

    def _settings(self, probes: int | None, candidates: int | None,
                  min_hits: int | None = None) -> tuple[int, int, int]:
        fam = self.family
        L = fam.L if fam else 1
        p = probes if probes is not None else self.settings.get("probes") or L
        c = candidates if candidates is not None else self.settings.get("candidates") or 0
        h = min_hits if min_hits is not None else self.settings.get("min_hits") or 1
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise InvalidParameterError(f"min_hits must be an int >= 1; found {h!r}")
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise InvalidParameterError(f"probes must be an int >= 1; found {p!r}")
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise InvalidParameterError(f"candidates must be an int >= 0 (0: no cap); found {c!r}")
        return int(p), int(c), int(h)

    def _gather(self, x: np.ndarray, probes: int, cap: int, min_hits: int = 1,
                stats: dict[str, Any] | None = None) -> np.ndarray:
        fam = self.family
        if self.n_rows == 0:
            return np.empty(0, dtype=np.int64)
        if fam is None:  # fewer rows than calibration needs: scan them all, exactly
            c = self._txn.cursor(self._store.db(b"id2key"))
            return np.array([unpack_id(k) for k in c.iternext(values=False)], dtype=np.int64)
        tables, keys = fam.probe(x, probes)
        cursors = [self._cursor(t) for t in range(fam.L)]
        allids = decode_many(postings.read_buckets(cursors, tables.tolist(), bucket_bytes(keys)))
        if self._runs is not None:
            allids = np.concatenate([allids, self._runs.lookup(tables, keys)])
        found = len(allids)
        if stats is not None:
            stats["buckets"] = len(tables)
            stats["postings"] = found
        if not found:
            return np.empty(0, dtype=np.int64)
        sparse = min_hits > 1 and not (cap and found > cap) and found * 4 < self.n_rows
        if sparse:  # sorted once: the largest id is last, repeats are adjacent
            allids = np.sort(allids)
        top = int(allids[-1] if sparse else allids.max())
        if top >= self.n_rows:
            raise CorruptIndexError(
                f"a posting list holds id {top} beyond the {self.n_rows} committed rows; "
                "run `lshdb check`")
        if sparse:
            return repeated(allids, min_hits).astype(np.int64)
        ids, counts = union(allids, self.n_rows,
                            with_counts=bool(cap and found > cap) or min_hits > 1)
        if min_hits > 1 and counts is not None:
            keep = counts >= min_hits
            ids, counts = ids[keep], counts[keep]
        if cap and counts is not None and len(ids) > cap:
            best = np.argsort(-counts, kind="stable")[:cap]
            ids = np.sort(ids[best])
        return ids.astype(np.int64)

    def candidates(self, vector: Any, probes: int | None = None,
                   candidates: int | None = None,
                   min_hits: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Candidate internal ids of one query, and where the time went."""
        x = self.metric.prepare_one(vector)
        p, c, h = self._settings(probes, candidates, min_hits)
        stats: dict[str, Any] = {}
        t0 = time.perf_counter()
        ids = self._gather(x, p, c, h, stats)
        stats["candidates"] = len(ids)
        stats["seconds_lookup"] = time.perf_counter() - t0
        return ids, stats

    # -- queries ---------------------------------------------------------------------
    def query(self, vector: Any, k: int | None = 10, probes: int | None = None,
              candidates: int | None = None, min_hits: int | None = None,
              threshold: float | None = None, exact: bool | None = None,
              rerank: int | None = None, scan: bool | None = None) -> list[tuple[Key, float]]:
        """The ``k`` nearest items among the candidates, best first.

        Dense metrics return ``[(key, distance)]``; ``probes`` buckets are visited (default:
        the stored setting), ``min_hits`` keeps only items met in at least that many of
        them, ``candidates`` caps how many are re-ranked exactly (those met most often
        first); with hash codes, ``rerank`` candidates nearest in Hamming distance are
        re-ranked exactly (default: the stored setting, else 100). ``scan=True`` ranks every
        stored item instead of probing buckets: by its code's Hamming distance with codes,
        else exactly (brute force over the stored rows; the rows it returns are verified).

        A radius query: with ``threshold``, a dense metric returns every candidate within
        that distance (``distance <= threshold``, up to float32 rounding: 1e-6 of the
        threshold, at least 1e-6), nearest first, at most ``k`` of them
        (``k=None`` for all); every candidate is re-ranked exactly (no code pre-filter),
        and ``scan=True`` takes every stored item as a candidate.

        Under ``jaccard`` the item is a document, a token set or a signature and the result
        is ``[(key, jaccard)]``, highest first: every candidate with Jaccard >= ``threshold``
        (``k=None`` for all of them), scored exactly from stored token hashes when the index
        keeps them (``exact=False`` to use the signature estimate).
        """
        metric = self.metric
        metric.check_k(k, threshold)
        x, extra = metric.prepare_query(vector)
        if metric.is_set:
            if self._scan(scan):
                raise InvalidParameterError("scan ranks every stored vector; a jaccard index "
                                            "is queried through its bands")
            ids = self._gather(x, *self._settings(probes, candidates, min_hits))
            return rank_sets(self, x, extra, ids, k, threshold, exact)
        if threshold is not None:
            return self._within(x, threshold, k, probes, candidates, min_hits, exact, rerank,
                                scan)
        if self._scan(scan):
            return self._rank_scan(x, k, rerank)  # type: ignore[arg-type]
        p, c, h = self._settings(probes, candidates, min_hits)
        ids = self._gather(x, p, c, h)
        if exact is not None:
            raise InvalidParameterError("threshold and exact apply to metric jaccard only")
        return self._rank(x, ids, k, rerank)  # type: ignore[arg-type]

    def query_batch(self, vectors: Any, k: int | None = 10, probes: int | None = None,
                    candidates: int | None = None, min_hits: int | None = None,
                    threshold: float | None = None, exact: bool | None = None,
                    rerank: int | None = None,
                    scan: bool | None = None) -> list[list[tuple[Key, float]]]:
        """:meth:`query` for each row of a 2-D array (under jaccard: each item of a list)."""
        if self.metric.is_set:
            if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
                items: list[Any] = list(vectors)
            else:
                items = list(vectors)
            return [self.query(v, k, probes, candidates, min_hits, threshold, exact, rerank,
                               scan) for v in items]
        X = self.metric.prepare(vectors, "queries")
        if threshold is not None:
            self.metric.check_k(k, threshold)
            return [self._within(x, threshold, k, probes, candidates, min_hits, exact, rerank,
                                 scan) for x in X]
        self.metric.check_k(k, threshold)
        if self._scan(scan):
            if self._code_cols is None and self._blas_scan() and self.n_rows:
                return self._rank_scan_batch(X, k, rerank)  # type: ignore[arg-type]
            return [self._rank_scan(x, k, rerank) for x in X]  # type: ignore[arg-type]
        p, c, h = self._settings(probes, candidates, min_hits)
        return [self._rank(x, self._gather(x, p, c, h), k, rerank)  # type: ignore[arg-type]
                for x in X]

    def _within(self, x: np.ndarray, radius: Any, k: int | None, probes: int | None,
                candidates: int | None, min_hits: int | None, exact: bool | None,
                rerank: int | None, scan: bool | None) -> list[tuple[Key, float]]:
        """The radius query of a dense metric (see :meth:`query`)."""
        self.metric.check_threshold(radius)
        if exact is not None:
            raise InvalidParameterError("exact applies to metric jaccard only")
        if rerank is not None:
            raise InvalidParameterError("rerank applies to k-nearest queries; a threshold "
                                        "query re-ranks every candidate exactly")
        # float32 distances carry rounding (an item's cosine distance to itself can come out
        # as 6e-8): within 1e-6 of the radius counts as within it
        limit = float(radius) + 1e-6 * max(1.0, float(radius))
        if self._scan(scan):  # over the mapped rows unverified, as a k-nearest scan; the
            # rows within the radius are read again below, verified
            M = self._rows.matrix(self.n_rows)
            step = 16 * _SCAN_ROWS
            ids = np.concatenate([s + np.flatnonzero(
                self.metric.distances(M[s : s + step], x).astype(np.float64) <= limit)
                for s in range(0, self.n_rows, step)] or [np.empty(0, dtype=np.int64)])
        else:
            ids = self._gather(x, *self._settings(probes, candidates, min_hits))
        keep_ids, keep_d = [], []
        for s in range(0, len(ids), 65536):
            block = ids[s : s + 65536]
            d = self.metric.distances(self._rows.read(block, self.n_rows), x)
            near = np.flatnonzero(d.astype(np.float64) <= limit)
            keep_ids.append(block[near])
            keep_d.append(d[near])
        found = np.concatenate(keep_ids) if keep_ids else np.empty(0, dtype=np.int64)
        dist = np.concatenate(keep_d) if keep_d else np.empty(0)
        if len(found) and self.live < self.n_rows:  # deleted rows are still in the file
            live = np.isin(found, self._live(found))
            found, dist = found[live], dist[live]
        order = np.lexsort((found, dist))[:k]
        return [(self.key_of(int(found[j])), float(dist[j])) for j in order]

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
        return np.concatenate([self.metric.distances(M[s : s + _SCAN_ROWS], x)
                               for s in range(0, len(M), _SCAN_ROWS)])

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

    # -- statistics ------------------------------------------------------------------
    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """Parameters, counts, bucket-size distribution per table and bytes on disk by part
        (see :func:`lshdb.index.stats.snapshot_stats`)."""
        return snapshot_stats(self, buckets)
