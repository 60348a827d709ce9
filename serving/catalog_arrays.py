"""The snapshot's catalog as columns, one row per item in the catalog's order.

Built once per catalog read (a snapshot that reuses its predecessor's catalog reuses these too),
so a request filters, orders and caps its candidates with array lookups instead of reading a
dict per candidate. Regions and categories are boolean matrices rather than bitmasks: a catalog
may list any number of either. ``compiled`` is the same columns copied into the Rust core
(``serving.page``), once per catalog read rather than per request.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

import funnel_core
from serving.request import UNKNOWN_ROW

# Age ratings from most to least permissive audience; an item rated outside the scale passes
# only when the request sets no limit.
AGE_SCALE = ("G", "PG", "PG-13", "R", "NC-17")


def age_rank(rating: str | None) -> int:
    return AGE_SCALE.index(rating) if rating in AGE_SCALE else len(AGE_SCALE)


@dataclass(frozen=True)
class CatalogArrays:
    ids: list[str]
    row_of: dict[str, int]
    active: np.ndarray  # bool
    anywhere: np.ndarray  # bool: the item lists no regions, so every region may show it
    region_index: dict[str, int]
    in_region: np.ndarray  # bool [items, regions]
    age_rank: np.ndarray  # int64, AGE_SCALE position (len(AGE_SCALE) when unrated)
    category_index: dict[str, int]
    in_category: np.ndarray  # bool [items, categories]
    first_category: np.ndarray  # int64: the category a page's cap counts the item under ("" is one too)
    tie_rank: np.ndarray  # int64: the item id's place in sorted order, the exact tie-break of equal scores
    compiled: funnel_core.Catalog

    @classmethod
    def of(cls, catalog: dict[str, dict]) -> "CatalogArrays":
        ids = list(catalog)
        entries = list(catalog.values())
        region_index: dict[str, int] = {}
        category_index: dict[str, int] = {"": 0}  # an item without categories is capped under ""
        listed_regions = [[region_index.setdefault(r, len(region_index)) for r in e.get("regions") or ()] for e in entries]
        listed_categories = [[category_index.setdefault(c, len(category_index)) for c in e.get("categories") or ()]
                             for e in entries]
        in_region = _membership(listed_regions, len(region_index))
        in_category = _membership(listed_categories, len(category_index))
        tie_rank = np.empty(len(ids), dtype=np.int64)
        tie_rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        active = np.array([bool(e.get("active", True)) for e in entries], dtype=bool)
        anywhere = np.array([not found for found in listed_regions], dtype=bool)
        ages = np.array([age_rank(e.get("age_rating")) for e in entries], dtype=np.int64)
        first_category = np.array([found[0] if found else 0 for found in listed_categories], dtype=np.int64)
        return cls(
            ids=ids,
            row_of={item: row for row, item in enumerate(ids)},
            active=active,
            anywhere=anywhere,
            region_index=region_index,
            in_region=in_region,
            age_rank=ages,
            category_index=category_index,
            in_category=in_category,
            first_category=first_category,
            tie_rank=tie_rank,
            compiled=funnel_core.Catalog(ids, active, anywhere, in_region, ages, in_category, first_category, tie_rank),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, items: list[str]) -> np.ndarray:
        """The catalog row of each item (UNKNOWN_ROW where the catalog lacks it)."""
        return np.fromiter(map(self.row_of.get, items, itertools.repeat(UNKNOWN_ROW)), dtype=np.int64, count=len(items))

    def columns(self, categories: tuple[str, ...]) -> list[int]:
        """The ``in_category`` columns of ``categories`` (a name no item lists has none)."""
        return [self.category_index[name] for name in categories if name and name in self.category_index]

    def in_any(self, rows: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
        """Per row of ``rows``: whether the item is in any of ``categories``."""
        return self.in_columns(rows, self.columns(categories))

    def in_columns(self, rows: np.ndarray, columns: list[int]) -> np.ndarray:
        """Per row of ``rows``: whether the item is in the category of any of ``columns``."""
        if not columns:
            return np.zeros(len(rows), dtype=bool)
        return self.in_category[np.ix_(rows, columns)].any(axis=1)


def _membership(listed: list[list[int]], width: int) -> np.ndarray:
    matrix = np.zeros((len(listed), max(width, 1)), dtype=bool)
    lengths = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
    matrix[np.repeat(np.arange(len(listed)), lengths), np.fromiter(itertools.chain.from_iterable(listed), dtype=np.int64,
                                                                   count=int(lengths.sum()))] = True
    return matrix
