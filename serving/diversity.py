"""Diversity: at most ``max_per_category`` items of one (first) category on a page, where the pool allows."""

from __future__ import annotations

import numpy as np


def capped(categories: np.ndarray, max_per_category: int, k: int) -> np.ndarray:
    """The positions of a page of ``k`` from a ranking whose items have ``categories`` (first-category
    codes, in rank order): the first ``k`` under the cap, topped up in rank order with what the cap
    held back if it leaves the page short (a page of fewer items would be worse than a less varied one)."""
    if max_per_category <= 0:
        return np.arange(min(k, len(categories)))
    within = earlier_of_same(categories) < max_per_category
    page = np.flatnonzero(within)[:k]
    if len(page) < k:
        page = np.concatenate([page, np.flatnonzero(~within)[: k - len(page)]])
    return page


def earlier_of_same(values: np.ndarray) -> np.ndarray:
    """Per element: how many elements before it hold the same value (a per-category running count)."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.ones(n, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    positions = np.arange(n)
    counts = np.empty(n, dtype=np.int64)
    counts[order] = positions - np.maximum.accumulate(np.where(starts_group, positions, 0))
    return counts
