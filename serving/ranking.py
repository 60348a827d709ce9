"""Merge the candidates of every source into one ranking: the blend of ``FunnelConfig``, or the
scores of a learned ranker (``serving.ranker``) where the served model version carries one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import NamedTuple

from serving.candidates import Candidate
from serving.config import FunnelConfig


# A learned ranker bound to one request: each distinct item's score, and the candidate naming its source.
Learned = Callable[[list[Candidate]], tuple[dict[str, float], dict[str, Candidate]]]


class Scored(NamedTuple):
    item_id: str
    score: float
    source: str  # the source that contributed most: it names the explanation
    because: str


def blend(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None) -> list[Scored]:
    """Each item once, scored by the sum of its sources' rank credits, best first (ties by item id).

    ``boost`` multiplies chosen items' scores (cold start: the onboarding categories).
    """
    return list(ranking(candidates, config, boost))


def ranking(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None,
            learned: Learned | None = None) -> Iterator[Scored]:
    """``blend`` (or ``learned``'s scores), as an iterator: the request path reads only as far down
    the ranking as its page needs."""
    totals, best = learned(candidates) if learned else _blended(candidates, config)
    if boost:
        totals = {item: total * boost.get(item, 1.0) for item, total in totals.items()}
    # Two stable sorts (by id, then by score descending) give score order with ties by id.
    order = sorted(totals.items(), key=itemgetter(0))
    order.sort(key=itemgetter(1), reverse=True)
    return (Scored(item, total, best[item].source, best[item].because) for item, total in order)


def _blended(candidates: list[Candidate], config: FunnelConfig) -> tuple[dict[str, float], dict[str, Candidate]]:
    """Each item's sum of rank credits, and its candidate with the largest credit."""
    weights, offset = config.weights, config.rank_offset
    totals: dict[str, float] = {}
    best: dict[str, Candidate] = {}
    best_credit: dict[str, float] = {}
    for candidate in candidates:
        item = candidate.item_id
        credit = weights.get(candidate.source, 0.0) / (offset + candidate.rank)
        total = totals.get(item)
        if total is None:
            totals[item], best[item], best_credit[item] = credit, candidate, credit
        else:
            totals[item] = total + credit
            if credit > best_credit[item]:
                best[item], best_credit[item] = candidate, credit
    return totals, best
