"""Trending and popular lists: decayed sums of each hour's distinct users.

An item's score at ``now_ms`` is the sum, over the hours of a horizon, of its distinct users in
that hour times 0.5 ** (the hour's age / the half-life). ``FeatureReader.decayed_rankings``
reads the hours and sums them here; serving's snapshot keeps the sums of the hours no record
can change any more (``serving.settled``) and adds only the others at each refresh.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from kapparec.timeunits import HOUR_MS

Decay = tuple[float, int]  # (half-life hours, horizon hours)
Ranked = list[tuple[str, float]]
HourRanking = tuple[int, Ranked]  # an hour's start and its items' distinct users, best first


def hours_within(now_ms: int, horizon_hours: int) -> list[int]:
    """The starts of the hours a horizon of ``horizon_hours`` covers at ``now_ms``, newest first."""
    now_hour = now_ms - now_ms % HOUR_MS
    return [now_hour - h * HOUR_MS for h in range(horizon_hours)]


def decayed_sums(hour_rankings: Iterable[HourRanking], decays: list[Decay], now_ms: int) -> list[dict[str, float]]:
    """For each decay, every item's decayed sum over the hours of its horizon, at ``now_ms``."""
    sums: list[dict[str, float]] = [{} for _ in decays]
    for hour, ranked_hour in hour_rankings:
        age_hours = max(0, now_ms - hour) / HOUR_MS
        for (half_life_hours, horizon_hours), summed in zip(decays, sums):
            if hour > now_ms - horizon_hours * HOUR_MS:
                decay = 0.5 ** (age_hours / half_life_hours)
                for item, users in ranked_hour:
                    if users > 0:  # an item whose only actors were bots keeps a 0
                        summed[item] = summed.get(item, 0.0) + users * decay
    return sums


def best(sums: dict[str, float], n: int) -> Ranked:
    """The ``n`` highest sums, ties by item id (descending, as every list of the store)."""
    return heapq.nlargest(n, sums.items(), key=lambda kv: (kv[1], kv[0]))
