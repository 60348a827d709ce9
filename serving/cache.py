"""Recent pages per user and request, valid only while the user's stored features are unchanged.

A cached page is served again only if the user's feature stamp (``featurestore.user_read``,
compared in Redis in the round trip that would otherwise read the features) still equals the
stamp it was computed under, so an event the stream job commits for that user invalidates it at
once; the TTL only bounds how stale the shared lists (trending, popular) in a cached page can get.

A page is held as plain tuples of strings and numbers, which Python's cyclic garbage collector
stops tracking. Held as ``RankedItem``s (a tuple subclass, which it tracks for good), a few
seconds of pages were most of the objects each full collection walked, and every request in
flight waited through each of those collections.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import NamedTuple

from cachetools import TTLCache

from serving.request import Page, RankedItem

DEFAULT_TTL_S = 5.0
DEFAULT_MAX_ENTRIES = 100_000


class ResponseCache:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES):
        self._pages: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self._lock = threading.Lock()  # TTLCache is not thread-safe; the server's handlers are threads

    def peek(self, key: Hashable) -> Held | None:
        """What is held for ``key`` (the caller judges its stamp: it is compared in Redis)."""
        with self._lock:
            held = self._pages.get(key)
        return Held(*held) if held else None

    def put(self, key: Hashable, stamp: Hashable, page: Page) -> None:
        held = (stamp, tuple(map(tuple, page.items)), page.widened)
        with self._lock:
            self._pages[key] = held


class Held(NamedTuple):
    """A cached page and the stamp it was computed under."""

    stamp: Hashable
    items: tuple[tuple, ...]  # each a ``RankedItem``'s fields
    widened: bool

    def page(self) -> Page:
        return Page([RankedItem._make(item) for item in self.items], "cached", self.widened)
