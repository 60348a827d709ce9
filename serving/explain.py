"""One line per recommended item that says why it is there."""

from __future__ import annotations


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
