"""Most popular items: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.data import Catalog, Interactions


class Popularity:
    name = "popularity"

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def fit(self, train: Interactions, catalog: Catalog | None = None, events: Interactions | None = None) -> None:
        items, counts = np.unique(train.item_ids, return_counts=True)
        self._counts = dict(zip(items.tolist(), counts.tolist()))

    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        row = np.array([self._counts.get(item, 0) for item in items], dtype=np.float32)
        return np.broadcast_to(row, (len(users), len(items))).copy()
