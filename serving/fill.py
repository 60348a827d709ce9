"""Fill: when the filters leave a page short, popular items that pass them, then any catalog item that does."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from serving.catalog_arrays import CatalogArrays
from serving.filters import ItemFilter

if TYPE_CHECKING:
    from serving.snapshot import Snapshot

# Catalog rows checked per step once the popular list is used up: a short page needs few.
CATALOG_STEP = 4096


def popular_rows(snapshot: Snapshot, catalog: CatalogArrays, region: str) -> np.ndarray:
    """The region's popular list as catalog rows, what fills a short page first: once per snapshot."""
    return snapshot.derived(("popular_rows", region), lambda: catalog.rows(
        [item for item, _ in snapshot.popular_in(region)]))


def popular_fill(catalog_size: int, allowed: ItemFilter, popular_rows: np.ndarray, taken: np.ndarray,
                 needed: int) -> np.ndarray:
    """Up to ``needed`` rows not in ``taken`` that pass ``allowed``: the popular list's first, then the
    catalog's in its order. Never an empty page while anything in the catalog may be shown."""
    excluded = np.zeros(catalog_size, dtype=bool)
    excluded[taken] = True
    steps = itertools.chain([popular_rows[popular_rows >= 0]],
                            (np.arange(start, min(start + CATALOG_STEP, catalog_size))
                             for start in range(0, catalog_size, CATALOG_STEP)))
    found = []
    for rows in steps:
        if needed == 0:
            break
        rows = rows[~excluded[rows]]
        rows = rows[allowed.mask(rows)][:needed]
        excluded[rows] = True
        found.append(rows)
        needed -= len(rows)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
