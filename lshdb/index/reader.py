"""Reads inside one LMDB snapshot: candidate retrieval, exact re-ranking, key look-ups.

A :class:`Reader` sees the committed state of the moment it began, however long it lives
and whatever writers do meanwhile. It is not shared between threads; take one per thread
(``with index.reader() as r``), or call the Index's one-shot methods, which take their own.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptIndexError, InvalidParameterError, KeyNotFoundError, LshdbError
from ..hashing.codes import CodeColumns, SimHashCoder
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
from ..tuning import params
from .blas import for_rows, one_thread
from .idsets import repeated, union
from .ranking import SCAN_ROWS, Ranking
from .sets import rank_sets
from .stats import snapshot_stats

if TYPE_CHECKING:
    from ..storage.rows import RowFile, RowNorms
    from ..storage.store import Store
    from .handle import Index

__all__ = ["Reader", "SnapshotContext"]


class Reader(Ranking):
    """A read snapshot of an index.

    Not shared between threads. Besides the public queries and look-ups, lshdb's
    maintenance code (check, backup) reads a snapshot through a small internal interface,
    described in ``docs/internals.md``: :attr:`index`, :attr:`txn`, :attr:`store`,
    :attr:`rows`, :attr:`codes`, :attr:`norms`, and the plain attributes ``n_rows``,
    ``live``, ``state``, ``family``, ``settings`` and ``metric``.
    """

    def __init__(self, index: Index, store: Store, rows: RowFile, txn: Any,
                 codes: CodeColumns | None = None, norms: RowNorms | None = None,
                 owner: Any = None) -> None:
        self._owner = owner  # the context that ends this snapshot: lives as long as it
        self._index = index
        self._store = store
        self._rows = rows
        self._txn = txn
        self._code_cols = codes
        self._row_norms = norms
        raw = txn.get(b"state", db=store.db(b"meta"))
        if raw is None:
            raise CorruptIndexError("meta record 'state' is missing; the index is damaged")
        state = index.decode_state(raw)  # the same record as the last snapshot's: decoded once
        self.state: dict[str, Any] = state
        self.n_rows: int = int(state["rows"])
        self.live: int = int(state["live"])
        self.retired_to: str | None = state.get("retired_to")
        self._runs: runs.RunSet | None = \
            store.runs_cache.snapshot(txn, store.db(b"meta")) if state.get("runs") else None
        self.metric = index.metric
        self.blas_free = index.metric.is_set  # set metrics compare values, no products
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
        if self._coder is None:  # codes begun by a block that has not committed
            self._code_cols = None
        # codes committed by another process's calibration since this handle opened
        self.codes_started = codes is None and family is not None and index.auto_codes() \
            and index.coder is None and txn.get(b"codes", db=store.db(b"meta")) is not None
        self.settings = index.settings
        self._cursors: dict[int, Any] = {}
        self._table_cursors: list[Any] = []  # every table's, once a query needs them
        self._key_cur: tuple[Any, Any] | None = None
        self._default_options: tuple[int, int, int] | None = None

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

    def _open_table_cursors(self, n_tables: int) -> list[Any]:
        self._table_cursors = [self._cursor(t) for t in range(n_tables)]
        return self._table_cursors

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

    def _defaults(self) -> tuple[int, int, int]:
        """:meth:`_settings` of a query that gives none, worked out once per snapshot."""
        got = self._default_options
        if got is None:
            got = self._default_options = self._settings(None, None, None)
        return got

    def _options(self, probes: int | None, candidates: int | None, min_hits: int | None,
                 rerank: int | None) -> tuple[int, int, int]:
        """A query's checked ``(probes, candidates, min_hits)``; the stored defaults, worked
        out once per snapshot, when it gives none."""
        if probes is None and candidates is None and min_hits is None and rerank is None:
            return self._defaults()
        self._check_options(probes, candidates, min_hits, rerank)
        return self._settings(probes, candidates, min_hits)

    def _check_options(self, probes: int | None, candidates: int | None,
                       min_hits: int | None, rerank: int | None) -> None:
        """Refuse options given for a query that would have no effect on it (a scan
        validates them too: it ignores them only while it scans)."""
        self._settings(probes, candidates, min_hits)
        n_tables = self.family.L if self.family else self._index.n_tables
        if min_hits is not None and min_hits > n_tables:
            raise InvalidParameterError(
                f"min_hits={min_hits} exceeds the index's {n_tables} tables: no item could "
                "be found that often; give at most the number of tables")
        if probes is not None and self.metric.is_set:
            raise InvalidParameterError(
                "probes do not apply to a jaccard index: its bands are looked up once each")
        if rerank is not None:
            if self._code_cols is None:
                raise InvalidParameterError(
                    "rerank applies to an index with hash codes (created with codes=B); "
                    "this one re-ranks every candidate exactly")
            if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) \
                    or rerank < 0:
                raise InvalidParameterError(f"rerank must be an int >= 0; found {rerank!r}")

    def _gather(self, x: np.ndarray, probes: int, cap: int, min_hits: int = 1,
                stats: dict[str, Any] | None = None) -> np.ndarray:
        fam = self.family
        if self.n_rows == 0:
            return np.empty(0, dtype=np.int64)
        if fam is None:  # fewer rows than calibration needs: scan them all, exactly
            c = self._txn.cursor(self._store.db(b"id2key"))
            return np.array([unpack_id(k) for k in c.iternext(values=False)], dtype=np.int64)
        tables, keys = fam.probe(x, probes)
        cursors = self._table_cursors or self._open_table_cursors(fam.L)
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

    @one_thread
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

    @one_thread
    def bucket_ids(self, vectors: Any) -> np.ndarray:
        """The bucket key of each row of ``vectors`` in each table, hashed by the index's own
        family: an ``(n, n_tables)`` int64 array (the bits of the uint64 keys the tables
        store), usable as features (:mod:`lshdb.features`).

        Raises
        ------
        LshdbError
            The index has not chosen its hash family yet (it does at its first
            ``params.CALIBRATE_MIN`` rows).
        InvalidVectorError, DimensionMismatchError
            The rows are not valid input for this index.
        """
        fam = self.family
        if fam is None:
            raise LshdbError(
                f"the index has not chosen its hash family yet (it does once it holds "
                f"{params.CALIBRATE_MIN} rows; it holds {self.live}); add rows first")
        X, _ = self.metric.prepare_items(vectors)
        params.validate_rows(fam, X, self._index.options)
        with for_rows(len(X)):  # (a large batch gets OpenBLAS's threads back)
            return fam.hash(X).view(np.int64)

    # -- queries ---------------------------------------------------------------------
    @one_thread
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
        radius = threshold is not None and not metric.is_set
        # (a radius query refuses rerank itself, whether or not the index has codes)
        options = self._options(probes, candidates, min_hits, None if radius else rerank)
        x, extra = metric.prepare_query(vector)
        if metric.is_set:
            if self._scan(scan):
                raise InvalidParameterError("scan ranks every stored vector; a jaccard index "
                                            "is queried through its bands")
            return rank_sets(self, x, extra, self._gather(x, *options), k, threshold, exact)
        if threshold is not None:
            return self._within(x, threshold, k, probes, candidates, min_hits, exact, rerank,
                                scan)
        if self._scan(scan):
            return self._rank_scan(x, k, rerank)  # type: ignore[arg-type]
        ids = self._gather(x, *options)
        if exact is not None:
            raise InvalidParameterError("threshold and exact apply to metric jaccard only")
        return self._rank(x, ids, k, rerank)  # type: ignore[arg-type]

    @one_thread
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
        radius = threshold is not None and not self.metric.is_set
        # (a radius query refuses rerank itself, whether or not the index has codes)
        self._check_options(probes, candidates, min_hits, None if radius else rerank)
        X = self.metric.prepare(vectors, "queries")
        if threshold is not None:
            self.metric.check_k(k, threshold)
            return [self._within(x, threshold, k, probes, candidates, min_hits, exact, rerank,
                                 scan) for x in X]
        self.metric.check_k(k, threshold)
        if self._scan(scan):
            if self._code_cols is None and self._blas_scan() and self.n_rows:
                return self._rank_scan_batch(X, k, rerank)  # type: ignore[arg-type]
            if self._code_cols is not None and self._coder is not None \
                    and self.live == self.n_rows:
                return self._rank_codes_batch(X, k, rerank)  # type: ignore[arg-type]
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
            step = 16 * SCAN_ROWS
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

    # -- statistics ------------------------------------------------------------------
    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """Parameters, counts, bucket-size distribution per table and bytes on disk by part
        (see :func:`lshdb.index.stats.snapshot_stats`)."""
        return snapshot_stats(self, buckets)


class SnapshotContext(AbstractContextManager):  # type: ignore[type-arg]
    """``with index.reader() as r``: a :class:`Reader` on a new snapshot (from
    :meth:`Index.begin_read`)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._cm: Any = None
        self._open = False

    def __del__(self) -> None:
        # a snapshot never exited (its Reader holds this context, so both are unreachable):
        # end it, or the index's close() would wait for it for ever
        if not getattr(self, "_open", False):
            return
        try:
            warnings.warn(f"unclosed lshdb reader of {self.index.path!r}; use "
                          "`with index.reader() as r`", ResourceWarning, source=self,
                          stacklevel=2)
        finally:
            try:
                self.__exit__(None, None, None)
            except Exception:
                pass

    def __enter__(self) -> Reader:
        reader, self._cm = self.index.begin_read(owner=self)
        self._open = True
        return reader

    def __exit__(self, *exc: Any) -> None:
        self._open = False
        self._cm.__exit__(*exc)
