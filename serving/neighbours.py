"""Co-occurrence neighbour lists, shared by every request of a serving process for a short while.

Neighbours are item-level and move slowly (they are counts over many users' sessions), while
reading one item's list means reading every pair it has: the request path would pay that for
each recent item of each user. So lists are kept per (feature version, item) for ``ttl_s``.
"""

from __future__ import annotations

import threading

from cachetools import TTLCache

from featurestore.reader import FeatureReader

# Neighbours kept per item: more than any request asks for.
KEPT = 200


class NeighbourCache:
    def __init__(self, ttl_s: float = 30.0, max_items: int = 200_000):
        self._lists: TTLCache = TTLCache(maxsize=max_items, ttl=ttl_s)
        self._lock = threading.Lock()

    def similar(self, reader: FeatureReader, item_id: str, n: int) -> list[tuple[str, float]]:
        key = (reader.version, item_id)
        with self._lock:
            found = self._lists.get(key)
        if found is None:
            found = reader.similar(item_id, KEPT)
            with self._lock:
                self._lists[key] = found
        return found[:n]
