"""Tuning an index's query-time settings by measuring recall and speed on the index itself.

``tune(index, target_recall=0.9)`` draws sample items from the index as queries (each query's
own item is excluded from its answers and from the truth), finds their exact ``k`` nearest
neighbours by brute force over the stored rows, and then measures recall@k and median query
latency on the real index for every combination of ``probes``, ``min_hits`` and candidate
cap it explores (each query run with every combination in turn, so that the machine's
drift slows all of them alike). The sample is split in two at random (seeded; never by row
order, which may follow how the data was gathered): one half chooses the setting (the
fastest whose recall reaches the target plus one standard error), the other, held out,
reports the recall to expect. The explored points form the recall/speed frontier that
``lshdb tune`` prints. ``apply=True`` stores the chosen settings in the index as its query
defaults, but only when the held-out recall confirms them: if it falls short of the target
by more than its standard error (or nothing reaches the target), :class:`TuningError` is
raised and nothing is stored.

Build-time parameters (k, L, w) are chosen when an index is built (see
:mod:`lshdb.tuning`; ``lshdb build --target-recall`` passes the target there);
``compact(retune=True)`` re-chooses them for the data the index holds now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidParameterError, TuningError
from ..tuning.params import check_int

if TYPE_CHECKING:
    from .handle import Index

__all__ = ["tune"]


def _truth(index: Index, ids: np.ndarray, k: int, n_rows: int, live: np.ndarray) -> np.ndarray:
    """Exact k nearest live rows (internal ids) of the rows ``ids``, each excluding itself."""
    metric = index.metric
    rows_file = index.files().rows
    Q = rows_file.read(ids, n_rows)
    best_d = np.full((len(ids), k), np.inf)
    best_i = np.full((len(ids), k), -1, dtype=np.int64)
    for s in range(0, len(live), 65536):
        block = live[s : s + 65536]
        rows = rows_file.read(block, n_rows)
        d = metric.distances_many(rows, Q).astype(np.float64)  # (queries, block)
        d[block[None, :] == ids[:, None]] = np.inf
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(block, d.shape)], axis=1)
        part = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(cand_d, part, 1)
        best_i = np.take_along_axis(cand_i, part, 1)
    return best_i


def tune(index: Index, target_recall: float = 0.9, k: int = 10, n_queries: int = 200,
         seed: int = 0, apply: bool = False,
         progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Measure the recall/speed frontier of query-time settings and choose one.

    Returns ``{"frontier": [...], "chosen": {...} | None, "held_out_recall": float,
    "held_out_se": float, "target_recall": ..., "queries": n}``; each frontier row holds
    the settings, recall@k on the tuning half and on the held-out half, the median latency
    and queries/s.

    Raises
    ------
    TuningError
        ``apply=True`` and the chosen setting's held-out recall is below the target by
        more than its standard error, or no setting reaches the target; nothing is stored
        (the exception's ``result`` holds the measurements).
    """
    if not 0 < target_recall <= 1:
        raise InvalidParameterError(f"target_recall must be in (0, 1]; found {target_recall!r}")
    check_int("k", k, 1, 1 << 20)
    check_int("n_queries", n_queries, 1, 1 << 20)
    if index.metric.is_set:
        raise InvalidParameterError("tune measures nearest-neighbour settings; a jaccard index "
                                    "is tuned by its threshold")
    with index.reader() as r:
        n_rows = r.n_rows
        live = np.array([i for i, _ in r.items()], dtype=np.int64)
        fam = r.family
    if len(live) < 2 * k + 2:
        raise InvalidParameterError(f"the index holds {len(live)} items; tuning needs more")
    rng = np.random.default_rng(seed)
    # in random order: the first half tunes, the second is held out
    q_ids = rng.permutation(rng.choice(live, min(n_queries, len(live) // 2), replace=False))
    truth = _truth(index, q_ids, k, n_rows, live)
    Q = index.files().rows.read(q_ids, n_rows)
    half = len(q_ids) // 2
    L = fam.L if fam else 1
    coded = index.coder is not None
    grid: list[dict[str, Any]] = []
    for probes in sorted({L, 2 * L, 4 * L, 8 * L, 16 * L, 32 * L}):
        for min_hits in ((1, 2) if fam else (1,)):
            for cap in (0, 2000, 8000):
                for rerank in ((100, 400) if coded else (None,)):
                    grid.append({"scan": False, "probes": probes, "min_hits": min_hits,
                                 "candidates": cap, "rerank": rerank})
    if coded:  # rank every stored code instead of probing buckets
        # steps of about 1.5x, so that the choice lands near the fastest re-rank that
        # reaches the target (docs/performance.md)
        for rerank in (30, 50, 75, 100, 150, 200, 300, 400, 800):
            grid.append({"scan": True, "probes": L, "min_hits": 1, "candidates": 0,
                         "rerank": rerank})
    else:  # rank every stored row exactly: the fastest route when buckets must be wide
        grid.append({"scan": True, "probes": L, "min_hits": 1, "candidates": 0,
                     "rerank": None})
    # every setting runs each query in turn (starting from a different setting each time),
    # so that a machine whose speed drifts during the minutes this takes slows every
    # setting alike; timed one setting after another, drift (10-35% on a shared machine)
    # outweighs the few percent between neighbouring settings
    lat = np.zeros((len(grid), len(q_ids)))
    hits = np.zeros((len(grid), len(q_ids)))
    with index.reader() as r:
        key_id = {key: i for i, key in r.items()}
        for j in range(len(q_ids)):
            want = set(truth[j].tolist())
            for g in np.roll(np.arange(len(grid)), -j).tolist():
                t0 = time.perf_counter()
                res = r.query(Q[j], k + 1, **grid[g])
                lat[g, j] = time.perf_counter() - t0
                got = [key_id[key] for key, _ in res if key_id[key] != q_ids[j]][:k]
                hits[g, j] = len(set(got) & want) / k
            if progress:
                progress("queries", j + 1, len(q_ids))
    frontier = [{**setting, "recall": float(np.mean(hits[g, :half])),
                 "held_out_recall": float(np.mean(hits[g, half:])),
                 "median_ms": float(np.median(lat[g, :half]) * 1e3),
                 "queries_per_s": float(1.0 / np.mean(lat[g, :half]))}
                for g, setting in enumerate(grid)]
    # one standard error of the tuning half's recall as a margin, so that the held-out half
    # (and the queries to come) reach the target too
    margin = float(np.sqrt(target_recall * (1 - target_recall) / (half * k)))
    ok = [f for f in frontier if f["recall"] >= min(target_recall + margin, 1.0)]
    chosen = min(ok, key=lambda f: f["median_ms"]) if ok else None
    held_se, confirmed = None, False
    if chosen is not None:
        held = hits[next(g for g, f in enumerate(frontier) if f is chosen), half:]
        confirmed, held_se = held_out_confirms(held, target_recall, k)
    result = {"target_recall": target_recall, "margin": round(margin, 4), "k": k,
              "queries": len(q_ids),
              "frontier": _pareto(frontier), "explored": frontier, "chosen": chosen,
              "held_out_recall": chosen["held_out_recall"] if chosen else None,
              "held_out_se": held_se}
    if apply:
        if chosen is None:
            raise TuningError(f"no setting reached recall {target_recall} on the tuning "
                              "queries; nothing was stored. Try a lower target_recall, or "
                              "rebuild with more tables", result)
        if not confirmed:
            raise TuningError(
                f"the chosen setting reached recall {chosen['recall']:.3f} on the tuning "
                f"queries but {chosen['held_out_recall']:.3f} on the held-out queries, short "
                f"of the target {target_recall} by more than its standard error "
                f"({held_se:.3f}); nothing was stored. Tune with more queries "
                "(n_queries=) or a lower target_recall", result)
        index.set_query_defaults(**{k2: chosen[k2] for k2 in
                                    ("probes", "min_hits", "candidates", "rerank", "scan")
                                    if chosen.get(k2) is not None})
        result["applied"] = True
    return result


def held_out_confirms(per_query: np.ndarray, target: float, k: int) -> tuple[bool, float]:
    """Whether held-out recall@k (one value per query) confirms ``target``: its mean is
    short of it by no more than its standard error. Returns (confirmed, standard error).

    The standard error comes from the queries' spread, and is never taken below what a
    binomial at the target gives (a few queries can agree by chance)."""
    n = len(per_query)
    se = float(np.sqrt(target * (1 - target) / (max(n, 1) * k)))
    if n >= 2:
        se = max(float(np.std(per_query, ddof=1) / np.sqrt(n)), se)
    mean = float(np.mean(per_query)) if n else 0.0
    return bool(n) and mean >= target - se, se


def _pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings no other setting beats on both recall and latency, fastest first."""
    out: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda f: (f["median_ms"], -f["recall"])):
        if not out or r["recall"] > out[-1]["recall"]:
            out.append(r)
    return out
