"""Recent pages per user and request, valid only while the user's stored features are unchanged.

A cached page is served again only if the user's feature stamp (``featurestore.user_read``,
compared in Redis in the round trip that would otherwise read the features) still equals the
stamp it was computed under, so an event the stream job commits for that user invalidates it at
once; the TTL only bounds how stale the shared lists (trending, popular) in a cached page can get.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from cachetools import TTLCache

from serving.request import Page

DEFAULT_TTL_S = 5.0
DEFAULT_MAX_ENTRIES = 100_000


class ResponseCache:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES):
        self._pages: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self._lock = threading.Lock()  # TTLCache is not thread-safe; the server's handlers are threads

    def peek(self, key: Hashable) -> tuple[Hashable, Page] | None:
        """The stamp and page held for ``key`` (the caller judges the stamp: it is compared in Redis)."""
        with self._lock:
            return self._pages.get(key)

    def put(self, key: Hashable, stamp: Hashable, page: Page) -> None:
        with self._lock:
            self._pages[key] = (stamp, page)
