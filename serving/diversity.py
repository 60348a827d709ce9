"""Diversity: at most ``max_per_category`` items of one (first) category on a page, where the pool allows."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from serving.ranking import Scored


def diversify(ranked: Iterable[Scored], catalog: dict[str, dict], max_per_category: int, k: int) -> list[Scored]:
    """The first ``k`` of ``ranked`` under the per-category cap, topped up in rank order if the cap
    leaves the page short (a page of fewer items would be worse than a less varied one)."""
    if max_per_category <= 0:
        return list(itertools.islice(ranked, k))
    page, held_back, per_category = [], [], {}
    for item in ranked:
        category = first_category(catalog, item.item_id)
        if per_category.get(category, 0) < max_per_category:
            per_category[category] = per_category.get(category, 0) + 1
            page.append(item)
            if len(page) == k:
                return page
        else:
            held_back.append(item)
    return page + held_back[: k - len(page)]


def first_category(catalog: dict[str, dict], item_id: str) -> str:
    """The category a page's cap counts an item under ("" for an item with none)."""
    return (catalog.get(item_id, {}).get("categories") or [""])[0]
