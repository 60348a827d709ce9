"""Co-occurrence neighbour lists, shared by every request of a serving process for a short while.

Neighbours are item-level and move slowly (they are counts over many users' sessions), while
each read is a round trip that a request waits through. So lists are kept per (feature
version, item) for ``ttl_s``, and the items a request misses are read together, in one trip.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cachetools import TTLCache

from featurestore.reader import FeatureReader

Neighbours = Sequence[tuple[str, float]]


class NeighbourCache:
    def __init__(self, ttl_s: float = 30.0, max_items: int = 200_000):
        # (version, item) -> (how many neighbours were read, the neighbours): a list read for n
        # serves any request for at most n. Reading more than asked (200 for requests of 20, as
        # this cache once did) made every miss normalise ten times the pairs it needed.
        self._lists: TTLCache = TTLCache(maxsize=max_items, ttl=ttl_s)
        self._lock = threading.Lock()

    def similar(self, reader: FeatureReader, item_id: str, n: int) -> Neighbours:
        return self.similar_many(reader, [item_id], n)[0]

    def similar_many(self, reader: FeatureReader, item_ids: list[str], n: int) -> list[Neighbours]:
        with self._lock:
            cached = {item: self._lists.get((reader.version, item)) for item in item_ids}
        found = {item: entry[1] for item, entry in cached.items() if entry is not None and entry[0] >= n}
        missing = [item for item in cached if item not in found]
        if missing:
            read = dict(zip(missing, reader.similar_many(missing, n)))
            found.update(read)
            with self._lock:
                for item, neighbours in read.items():
                    # A tuple of (str, float) tuples: the garbage collector stops tracking it (see serving.cache).
                    self._lists[(reader.version, item)] = (n, tuple(neighbours))
        return [found[item][:n] for item in item_ids]
