"""What a page may show: the request's filters, the user's seen and disliked items, and availability.

One boolean mask over the rows a request ranks. Seen and disliked items are checked for those
rows only: a user's seen set holds up to thousands of items, a request ranks a few hundred.
The rules are resolved to catalog columns once per request; the Rust core (``serving.page``)
reads the same attributes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from funnel_core import ANY_REGION, UNLISTED_REGION
from serving.catalog_arrays import AGE_SCALE, CatalogArrays
from serving.request import Filters


class ItemFilter:
    """``mask(rows)``: active, available in the region, within the filters, not blocked."""

    def __init__(self, catalog: CatalogArrays, filters: Filters, region: str, blocked: tuple[Collection[str], ...]):
        self._catalog = catalog
        # A region no item lists (UNLISTED_REGION) leaves only the items that list none.
        self.region = catalog.region_index.get(region, UNLISTED_REGION) if region else ANY_REGION
        # None: no include filter; an empty list: categories no item lists, so nothing passes.
        self.include = catalog.columns(filters.include_categories) if filters.include_categories else None
        self.exclude = catalog.columns(filters.exclude_categories)
        self.max_age = AGE_SCALE.index(filters.max_age_rating) if filters.max_age_rating else None
        self.blocked = [found for found in (*blocked, frozenset(filters.exclude_item_ids)) if found]

    def mask(self, rows: np.ndarray) -> np.ndarray:
        """Per row (catalog rows, UNKNOWN_ROW included): whether a page may show it."""
        catalog = self._catalog
        known = rows >= 0
        rows = np.where(known, rows, 0)
        allowed = known & catalog.active[rows]
        if self.region != ANY_REGION:
            listed = catalog.in_region[rows, self.region] if self.region != UNLISTED_REGION else False
            allowed &= catalog.anywhere[rows] | listed
        if self.include is not None:
            allowed &= catalog.in_columns(rows, self.include)
        if self.exclude:
            allowed &= ~catalog.in_columns(rows, self.exclude)
        if self.max_age is not None:
            allowed &= catalog.age_rank[rows] <= self.max_age
        if self.blocked and allowed.any():
            candidates = np.flatnonzero(allowed)
            ids = catalog.ids
            allowed[candidates] &= unblocked([ids[row] for row in rows[candidates].tolist()], self.blocked)
        return allowed


def unblocked(names: list[str], blocked: Sequence[Collection[str]]) -> np.ndarray:
    """Per name, whether no collection of ``blocked`` holds it."""
    allowed = np.ones(len(names), dtype=bool)
    for found in blocked:  # ``map`` of a set's ``__contains__``: no Python frame per item
        allowed &= ~np.fromiter(map(found.__contains__, names), dtype=bool, count=len(names))
    return allowed
