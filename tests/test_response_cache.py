"""The response cache: a page comes back whole, and what it holds is invisible to the garbage collector."""

from __future__ import annotations

import gc
from collections import Counter

from serving.cache import ResponseCache
from serving.request import Page, RankedItem

PAGE = Page([RankedItem("i1", 0.5, "two_tower", "Because you watched Heat", "Ronin"),
             RankedItem("i2", 0.25, "popular", "Popular in drama", "")], "full", widened=True,
            candidates=Counter(two_tower=40, popular=20))


def test_a_cached_page_comes_back_whole_and_marked_cached():
    cache = ResponseCache()
    cache.put(("u1", "", b"request"), ("v1", "stamp"), PAGE)
    held = cache.peek(("u1", "", b"request"))
    assert held.stamp == ("v1", "stamp")
    assert held.page() == Page(PAGE.items, "cached", widened=True)
    assert all(type(item) is RankedItem for item in held.page().items)
    assert cache.peek(("u2", "", b"request")) is None


def test_the_garbage_collector_does_not_walk_cached_pages():
    # Every full collection walks what the collector tracks, with every request waiting; held as
    # RankedItems, each page added about twenty objects to that walk.
    cache = ResponseCache(max_entries=10_000)
    gc.collect()
    before = len(gc.get_objects())
    pages = 2_000
    for n in range(pages):
        items = [RankedItem(f"i{n}-{k}", k / 10, "two_tower", f"Because you watched {k}", f"t{k}") for k in range(20)]
        cache.put((f"u{n}", "", b"request"), ("v1", f"stamp{n}"), Page(items, "full"))
    gc.collect()
    assert len(gc.get_objects()) - before < 2 * pages
