"""Merge the candidates of every source into one ranking: the blend of ``FunnelConfig``, or the
scores of a learned ranker (``serving.ranker``) where the served model version carries one.

The blend sums each item's rank credits with one ``bincount`` over the pool, in pool order, so
every sum is the same float as a left-to-right Python sum; the candidate that names an item's
source is the one with the largest credit, the earliest among equals; and one ``lexsort`` orders
the items by score, ties by item id (the catalog's ``tie_rank``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.request import Pool, Scored

# A learned ranker bound to one request: each distinct item's id and score, and the position in
# the pool of the candidate naming its source.
Learned = Callable[[Pool], tuple[list[str], np.ndarray, np.ndarray]]


def credits(pool: Pool, config: FunnelConfig) -> np.ndarray:
    """Each candidate's rank credit: its source's weight / (rank_offset + its rank)."""
    return np.array(config.source_weights())[pool.sources] / (config.rank_offset + pool.ranks)


def ranking(pool: Pool, catalog: CatalogArrays, config: FunnelConfig, boosted: tuple[str, ...] | None = None,
            learned: Learned | None = None) -> Scored:
    """The pool's distinct catalog items, best first. The score of an item in one of the ``boosted``
    categories (a new user's onboarding choices) is multiplied by ``config.onboarding_boost``."""
    items, totals, best = learned_scores(pool, catalog, learned) if learned else blended(pool, credits(pool, config))
    if boosted:
        totals = totals * np.where(catalog.in_any(items, boosted), config.onboarding_boost, 1.0)
    order = np.lexsort((catalog.tie_rank[items], -totals))
    best = best[order]
    return Scored(items[order], totals[order], pool.sources[best], best, pool.because)


def blended(pool: Pool, credit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct catalog rows of ``pool``, each one's summed credit and its naming candidate's position."""
    positions = np.flatnonzero(pool.rows >= 0)
    items, local = np.unique(pool.rows[positions], return_inverse=True)
    credit = credit[positions]
    totals = np.bincount(local, weights=credit, minlength=len(items))
    order = np.lexsort((positions, -credit, local))
    grouped = local[order]
    firsts = np.ones(len(order), dtype=bool)
    np.not_equal(grouped[1:], grouped[:-1], out=firsts[1:])
    return items, totals, positions[order[firsts]]


def learned_scores(pool: Pool, catalog: CatalogArrays, learned: Learned) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``learned``'s scores of the pool's distinct catalog items (it scores the whole pool, off-catalog items too)."""
    ids, scores, best = learned(pool)
    rows = catalog.rows(ids)
    known = rows >= 0
    return rows[known], scores[known], best[known]
