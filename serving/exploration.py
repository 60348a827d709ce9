"""Exploration: a share of each page kept for new items, so they get exposure before anyone engaged with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from serving.catalog_arrays import CatalogArrays
from serving.diversity import earlier_of_same
from serving.request import Scored

if TYPE_CHECKING:
    from serving.snapshot import Snapshot


def fresh_rows(snapshot: Snapshot, catalog: CatalogArrays) -> np.ndarray | None:
    """Per catalog row: whether the item is new (on the snapshot's list of new items); None when
    none is, so a page has nothing to explore. Built once per snapshot."""
    def build() -> tuple[np.ndarray | None]:
        fresh = np.zeros(len(catalog), dtype=bool)
        rows = catalog.rows([item for item, _ in snapshot.new_items])
        fresh[rows[rows >= 0]] = True
        return (fresh if fresh.any() else None,)  # a tuple: ``derived`` recomputes a None

    return snapshot.derived("fresh", build)[0]


def explored(page: Scored, ranked: Scored, is_fresh: np.ndarray, catalog: CatalogArrays,
             max_per_category: int, wanted_share: float, k: int) -> Scored:
    """``page`` with ``round(k * wanted_share)`` new items on it where it can: the best new items of
    ``ranked`` (what passed the filters, then the fill, in that order) that the per-category cap
    allows replace the lowest-ranked others. ``is_fresh``: per catalog row, whether the item is new."""
    on_page_fresh = is_fresh[page.rows]
    wanted = round(k * wanted_share) - int(on_page_fresh.sum())
    if wanted <= 0 or not is_fresh.any():
        return page
    on_page = set(page.rows.tolist())
    offered = ranked.take(np.flatnonzero(is_fresh[ranked.rows] & ~np.fromiter(
        map(on_page.__contains__, ranked.rows.tolist()), dtype=bool, count=len(ranked))))
    categories = catalog.first_category[offered.rows]
    if max_per_category:
        # Counted over the whole page before any item leaves it, so the cap still holds after.
        per_category = np.bincount(catalog.first_category[page.rows], minlength=len(catalog.category_index))
        offered = offered.take(np.flatnonzero(per_category[categories] + earlier_of_same(categories) < max_per_category))
    replaceable = np.flatnonzero(~on_page_fresh)
    extra = offered.take(np.arange(min(wanted, len(offered), len(replaceable))))
    staying = np.ones(len(page), dtype=bool)
    staying[replaceable[len(replaceable) - len(extra):]] = False
    return page.take(np.flatnonzero(staying)) + page.like(extra.rows, "new_item", extra.scores)
