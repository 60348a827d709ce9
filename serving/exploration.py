"""Exploration: a share of each page kept for new items, so they get exposure before anyone engaged with them."""

from __future__ import annotations

import numpy as np

from serving.catalog_arrays import CatalogArrays
from serving.diversity import earlier_of_same
from serving.request import Scored


def explored(page: Scored, fresh_passing: Scored, is_fresh: np.ndarray, catalog: CatalogArrays,
             max_per_category: int, wanted_share: float, k: int) -> Scored:
    """``page`` with ``round(k * wanted_share)`` new items on it where it can: the best passing new items
    (``fresh_passing``, in rank order) that the per-category cap allows replace the lowest-ranked others.
    ``is_fresh``: per catalog row, whether the item is new."""
    on_page_fresh = is_fresh[page.rows]
    wanted = round(k * wanted_share) - int(on_page_fresh.sum())
    if not is_fresh.any() or wanted <= 0:
        return page
    offered = fresh_passing.take(np.flatnonzero(~np.isin(fresh_passing.rows, page.rows)))
    categories = catalog.first_category[offered.rows]
    if max_per_category:
        # Counted over the whole page before any item leaves it, so the cap still holds after.
        on_page = np.bincount(catalog.first_category[page.rows], minlength=len(catalog.category_index))
        allowed = on_page[categories] + earlier_of_same(categories) < max_per_category
        offered = offered.take(np.flatnonzero(allowed))
    replaceable = np.flatnonzero(~on_page_fresh)
    extra = offered.take(np.arange(min(wanted, len(offered), len(replaceable))))
    staying = np.setdiff1d(np.arange(len(page)), replaceable[len(replaceable) - len(extra):], assume_unique=True)
    return page.take(staying) + page.like(extra.rows, "new_item", extra.scores)
