"""Ranking the candidates of a set (jaccard) query by Jaccard similarity."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorruptIndexError, InvalidParameterError
from ..storage.codec import Key, pack_id

if TYPE_CHECKING:
    from .reader import Reader

__all__ = ["rank_sets"]


def rank_sets(r: Reader, x: np.ndarray, q_tokens: np.ndarray | None, ids: np.ndarray,
              k: int | None, threshold: float | None,
              exact: bool | None) -> list[tuple[Key, float]]:
    """The candidates ``ids`` of a set query with Jaccard >= ``threshold``, highest first:
    exact from the stored token hashes when the index keeps them (unless ``exact=False``),
    else estimated from the signatures ``x``."""
    r.metric.check_threshold(threshold)
    stored = bool(r.index.options.get("store_tokens"))
    use_exact = stored and q_tokens is not None if exact is None else exact
    if use_exact and not stored:
        raise InvalidParameterError(
            "exact scores need an index created with store_tokens=True")
    if use_exact and q_tokens is None:
        raise InvalidParameterError("exact scores need the query's tokens, not a signature")
    if len(ids) == 0:
        return []
    if use_exact:
        scores = _exact_jaccard(r, ids, q_tokens)  # type: ignore[arg-type]
    else:
        scores = (r.rows.read(ids, r.n_rows) == x).mean(axis=1)
    keep = np.arange(len(ids)) if threshold is None else np.flatnonzero(scores >= threshold)
    order = keep[np.lexsort((ids[keep], -scores[keep]))]
    if k is not None:
        order = order[:k]
    return [(r.key_of(int(ids[j])), float(scores[j])) for j in order]

def _exact_jaccard(r: Reader, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    db = r.store.db(b"tokens")
    out = np.empty(len(ids))
    for j, i in enumerate(ids.tolist()):
        raw = r.txn.get(pack_id(i), db=db)
        if raw is None or len(raw) % 8:
            raise CorruptIndexError(f"the token hashes of internal id {i} are missing or "
                                    "damaged; run `lshdb check`")
        t = np.frombuffer(raw, dtype="<u8")
        inter = len(np.intersect1d(t, q, assume_unique=True))
        out[j] = inter / (len(t) + len(q) - inter)
    return out
