"""One line per recommended item that says why it is there: the last stage, over the page's items only."""

from __future__ import annotations

import functools
from collections.abc import Callable

from serving.request import SOURCES, RankedItem, Scored

# For the page's two-tower items: the item of the user's history nearest each ("" where none is known).
Nearest = Callable[[list[str]], list[str]]
# A two-tower item is explained by the nearest of the user's this-many latest engagements.
RECENT_FOR_EXPLANATIONS = 10


def nearest_engaged(closest: Callable[..., list[str]], engaged: list[str]) -> Nearest:
    """The hook that names a two-tower item's reason: ``closest`` (``ServingModel.closest``, by the
    items' embeddings) among ``engaged``, the user's ``RECENT_FOR_EXPLANATIONS`` latest items."""
    return functools.partial(closest, among=engaged)


def explanation(source: str, because_title: str, entry: dict, region: str, onboarding: set[str]) -> str:
    categories = entry.get("categories") or []
    if source in ("co_occurrence", "two_tower") and because_title:
        return f"Because you watched {because_title}"
    if source == "two_tower":
        return "Picked for your taste"
    if source == "continue_watching":
        return "Continue watching"
    if source == "trending":
        return "Trending in your region" if region else "Trending now"
    if source == "new_item":
        return "New this week"
    chosen = [c for c in categories if c in onboarding]
    if chosen or categories:
        return f"Popular in {(chosen or categories)[0]}"
    return "Popular right now"


def explained(page: Scored, ids: list[str], catalog: dict[str, dict], region: str, onboarding: set[str],
              nearest: Nearest | None) -> list[RankedItem]:
    """Each page item with its line and title; a two-tower item names ``nearest``'s choice."""
    items = [ids[row] for row in page.rows.tolist()]
    sources = [SOURCES[code] for code in page.sources.tolist()]
    because = [page.reason(n) for n in range(len(page))]
    tower = [n for n, source in enumerate(sources) if source == "two_tower"]
    if tower and nearest is not None:
        for n, item in zip(tower, nearest([items[n] for n in tower])):
            because[n] = item
    explained_items = []
    for item, score, source, reason in zip(items, page.scores.tolist(), sources, because):
        entry = catalog.get(item, {})
        because_title = catalog.get(reason, {}).get("title", "") if reason else ""
        text = explanation(source, because_title, entry, region, onboarding)
        explained_items.append(RankedItem(item, round(score, 6), source, text, entry.get("title", "")))
    return explained_items
