"""A request's page from its candidate pool: scores, filters, fill, diversity cap and exploration.

Serving runs ``compiled_page``: one call into the Rust core (``funnel_core/``), because on a
pool of a few hundred candidates numpy's fixed cost per call was more than the work of the
stages themselves. ``reference_page`` chains the numpy stages (``ranking``, ``filters``,
``fill``, ``diversity``, ``exploration``), which state each rule one module at a time; the
tests hold the two equal on random pools (tests/test_funnel_core.py), so a rule is changed in
both or the tests fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import funnel_core
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.diversity import capped
from serving.exploration import explored
from serving.fill import popular_fill
from serving.filters import ItemFilter
from serving.ranking import Learned, learned_scores, ranking
from serving.request import SOURCE_CODE, Pool, Scored


@dataclass(frozen=True)
class PageRequest:
    pool: Pool
    allowed: ItemFilter
    k: int
    popular_rows: np.ndarray  # the region's popular list as catalog rows: what fills a short page first
    learned: Learned | None = None  # None: the config's blend scores the pool
    boosted: tuple[str, ...] | None = None  # a new user's onboarding categories
    diverse: bool = True  # the per-category cap applies
    fresh: np.ndarray | None = None  # per catalog row, whether the item is new; None: no exploration


def reference_page(catalog: CatalogArrays, config: FunnelConfig, request: PageRequest) -> tuple[Scored, bool]:
    """The page and whether the filters left it short (then filled), stage by stage in numpy."""
    ranked = ranking(request.pool, catalog, config, request.boosted, request.learned)
    allowed, k = request.allowed, request.k
    passing = ranked.take(np.flatnonzero(allowed.mask(ranked.rows)))
    widened = len(passing) < k
    fill_rows = (popular_fill(len(catalog), allowed, request.popular_rows, passing.rows, k - len(passing))
                 if widened else np.zeros(0, dtype=np.int64))
    sequence = passing + passing.like(fill_rows, "popular")
    cap = config.max_per_category if request.diverse else 0
    page = sequence.take(capped(catalog.first_category[sequence.rows], cap, k))
    if request.fresh is not None:
        page = explored(page, sequence, request.fresh, catalog, config.max_per_category, config.exploration_share, k)
    return page, widened


def compiled_page(catalog: CatalogArrays, config: FunnelConfig, request: PageRequest) -> tuple[Scored, bool]:
    """``reference_page``'s page, from one call into the Rust core."""
    pool, allowed = request.pool, request.allowed
    scored = learned_scores(pool, catalog, request.learned) if request.learned is not None else None
    rows, scores, sources, because, widened = funnel_core.page(
        catalog.compiled, pool.rows, pool.sources, pool.ranks, config.source_weights(), config.rank_offset, scored,
        catalog.columns(request.boosted or ()), config.onboarding_boost, allowed.region, allowed.include,
        allowed.exclude, allowed.max_age, allowed.blocked, request.popular_rows,
        request.fresh if request.fresh is not None else _NO_FRESH, request.k,
        config.max_per_category if request.diverse else 0, config.max_per_category,
        config.exploration_share if request.fresh is not None else None, SOURCE_CODE["popular"],
        SOURCE_CODE["new_item"])
    return Scored(rows, scores, sources, because, pool.because), widened


_NO_FRESH = np.zeros(0, dtype=bool)
