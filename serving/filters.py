"""What a page may show: the request's filters, the user's seen and disliked items, and availability."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# Age ratings from most to least permissive audience; an item rated outside the scale passes
# only when the request sets no limit.
AGE_SCALE = ("G", "PG", "PG-13", "R", "NC-17")


@dataclass(frozen=True)
class Filters:
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    max_age_rating: str = ""  # "" = no limit
    exclude_item_ids: tuple[str, ...] = ()


class ItemFilter:
    """``allows(item_id)``: active, available in the region, within the filters, not blocked."""

    def __init__(self, catalog: dict[str, dict], filters: Filters, region: str, blocked: set[str]):
        self._catalog = catalog
        self._include = set(filters.include_categories)
        self._exclude = set(filters.exclude_categories)
        self._max_age = AGE_SCALE.index(filters.max_age_rating) if filters.max_age_rating else None
        self._region = region
        self._blocked = blocked | set(filters.exclude_item_ids)

    def allows(self, item_id: str) -> bool:
        # Called for every ranked candidate of every request: the checks a request does not ask
        # for cost nothing.
        entry = self._catalog.get(item_id)
        # Without a catalog entry nothing about the item can be checked (or titled): not shown.
        if entry is None or item_id in self._blocked or not entry.get("active", True):
            return False
        if self._region:
            regions = entry.get("regions")
            if regions and self._region not in regions:
                return False
        if self._include or self._exclude:
            categories = set(entry.get("categories") or ())
            if (self._include and not categories & self._include) or categories & self._exclude:
                return False
        return self._max_age is None or _age_rank(entry.get("age_rating")) <= self._max_age


class Passing:
    """The ranked items ``allowed`` lets through, in rank order, filtered only as far as the page's
    stages read: a page of 20 rarely needs more than the first few dozen of a few hundred candidates.
    Iterating again starts from the top (what was filtered once is kept)."""

    def __init__(self, ranked: Iterable[Any], allowed: ItemFilter):
        self._ranked = iter(ranked)
        self._allowed = allowed
        self._taken: list = []  # the passing items so far, in rank order

    def __iter__(self) -> Iterator[Any]:
        n = 0
        while n < len(self._taken) or self._take_next():
            yield self._taken[n]
            n += 1

    def first(self, k: int) -> list:
        """The first ``k`` passing items (fewer when fewer pass)."""
        while len(self._taken) < k and self._take_next():
            pass
        return self._taken[:k]

    def extend(self, items: Iterable[Any]) -> None:
        """Items that follow every passing one (call it once the ranking is used up)."""
        self._taken.extend(items)

    def _take_next(self) -> bool:
        for item in self._ranked:
            if self._allowed.allows(item.item_id):
                self._taken.append(item)
                return True
        return False


def _age_rank(rating: str | None) -> int:
    return AGE_SCALE.index(rating) if rating in AGE_SCALE else len(AGE_SCALE)
