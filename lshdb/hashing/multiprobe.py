"""Multi-probe (Lv et al. 2007): the perturbation sets a query should also visit, cheapest
first, from each table's per-action costs."""

from __future__ import annotations

import numpy as np

__all__ = ["best_perturbations", "cheapest_sets"]

_MAX_ACTIONS = 10  # perturbations use each table's 10 cheapest actions ...
_MAX_SET = 3  # ... at most 3 at a time (the best T sets of Lv et al. in practice)
_subset_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _subsets(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sets of size <= 3 over range(m): index table (padded with -1), set x action
    incidence, the pairs of actions, and set x pair incidence (all cached per m)."""
    cached = _subset_cache.get(m)
    if cached is None:
        from itertools import combinations

        sets = [c for r in range(1, min(_MAX_SET, m) + 1) for c in combinations(range(m), r)]
        table = np.full((len(sets), _MAX_SET), -1, dtype=np.int64)
        inc = np.zeros((m, len(sets)))
        pairs = np.array(list(combinations(range(m), 2)), dtype=np.int64).reshape(-1, 2)
        pair_index = {tuple(p): i for i, p in enumerate(pairs.tolist())}
        pair_inc = np.zeros((len(pairs), len(sets)))
        for i, c in enumerate(sets):
            table[i, : len(c)] = c
            inc[list(c), i] = 1.0
            for pr in combinations(c, 2):
                pair_inc[pair_index[pr], i] = 1.0
        cached = _subset_cache[m] = (table, inc, pairs, pair_inc)
    return cached


def cheapest_sets(scores: np.ndarray, n_extra: int, actions: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_extra`` cheapest perturbation sets, cheapest first, as flat indices into
    ``(L, n_sets)`` (see :func:`best_perturbations`); with each table's cheapest actions
    ``order`` (``(L, m)``) and the set x action incidence ``inc`` (``(m, n_sets)``)."""
    L, a = scores.shape
    m = min(a, _MAX_ACTIONS)
    order = np.argsort(scores, axis=1, kind="stable")[:, :m]
    rows = np.arange(L)[:, None]
    _, inc, pairs, pair_inc = _subsets(m)
    cost = scores[rows, order] @ inc  # (L, n_sets)
    if actions is not None and len(pairs):
        coord = actions[rows, order]
        same = (coord[:, pairs[:, 0]] == coord[:, pairs[:, 1]]).astype(np.float64)
        cost[same @ pair_inc > 0] = np.inf
    flat = cost.ravel()
    n = min(n_extra, len(flat))
    if n <= 0:
        return np.empty(0, dtype=np.intp), order, inc
    pick = np.argpartition(flat, n - 1)[:n] if n < len(flat) else np.arange(len(flat))
    pick = pick[np.argsort(flat[pick], kind="stable")]
    if actions is not None:  # only invalid sets cost inf
        pick = pick[np.isfinite(flat[pick])]
    return pick, order, inc


def best_perturbations(scores: np.ndarray, n_extra: int,
                       actions: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_extra`` cheapest perturbation sets over all tables, cheapest first.

    ``scores`` is ``(L, a)``: the cost of each single action in each table (for hyperplanes
    a squared margin, for p-stable a squared distance to a slot boundary). A set's cost is
    the sum of its actions' costs (Lv et al. 2007); sets are drawn from each table's 10
    cheapest actions, at most 3 at a time. ``actions`` (``(L, a)``, optional) names the
    coordinate each action moves; sets moving one coordinate twice are invalid. Returns the
    table of each set and its ``(n, 3)`` action indices (padded with -1).
    """
    pick, order, inc = cheapest_sets(scores, n_extra, actions)
    L, m = order.shape
    tables, sets = np.divmod(pick, inc.shape[1])
    full = np.full((L, m + 1), -1, dtype=np.int64)
    full[:, :m] = order
    return tables, full[tables[:, None], _subsets(m)[0][sets]]
