"""What a page may show: the request's filters, the user's seen and disliked items, and availability.

One boolean mask over the rows a request ranks. Seen and disliked items are checked for those
rows only: a user's seen set holds up to thousands of items, a request ranks a few hundred.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from serving.catalog_arrays import AGE_SCALE, CatalogArrays
from serving.request import Filters


class ItemFilter:
    """``mask(rows)``: active, available in the region, within the filters, not blocked."""

    def __init__(self, catalog: CatalogArrays, filters: Filters, region: str, blocked: tuple[Collection[str], ...]):
        self._catalog = catalog
        self._filters = filters
        self._max_age = AGE_SCALE.index(filters.max_age_rating) if filters.max_age_rating else None
        self._region = catalog.region_index.get(region) if region else None
        self._any_region = not region
        self._blocked = tuple(found for found in (*blocked, frozenset(filters.exclude_item_ids)) if found)

    def mask(self, rows: np.ndarray) -> np.ndarray:
        """Per row (catalog rows, UNKNOWN_ROW included): whether a page may show it."""
        catalog, filters = self._catalog, self._filters
        known = rows >= 0
        rows = np.where(known, rows, 0)
        allowed = known & catalog.active[rows]
        if not self._any_region:
            # A region no item lists leaves only the items that list none.
            listed = catalog.in_region[rows, self._region] if self._region is not None else False
            allowed &= catalog.anywhere[rows] | listed
        if filters.include_categories:
            allowed &= catalog.in_any(rows, filters.include_categories)
        if filters.exclude_categories:
            allowed &= ~catalog.in_any(rows, filters.exclude_categories)
        if self._max_age is not None:
            allowed &= catalog.age_rank[rows] <= self._max_age
        if self._blocked and allowed.any():
            candidates = np.flatnonzero(allowed)
            ids = catalog.ids
            names = [ids[row] for row in rows[candidates].tolist()]
            for found in self._blocked:  # ``map`` of a set's ``__contains__``: no Python frame per item
                allowed[candidates] &= ~np.fromiter(map(found.__contains__, names), dtype=bool, count=len(names))
        return allowed
