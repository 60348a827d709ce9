"""Merge the candidates of every source into one ranking (the blend of ``FunnelConfig``)."""

from __future__ import annotations

from typing import NamedTuple

from serving.candidates import Candidate
from serving.config import FunnelConfig


class Scored(NamedTuple):
    item_id: str
    score: float
    source: str  # the source that contributed most: it names the explanation
    because: str


def blend(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None) -> list[Scored]:
    """Each item once, scored by the sum of its sources' rank credits, best first (ties by item id).

    ``boost`` multiplies chosen items' scores (cold start: the onboarding categories).
    """
    weights, offset = config.weights, config.rank_offset
    totals: dict[str, float] = {}
    best: dict[str, tuple[float, Candidate]] = {}
    for candidate in candidates:
        item = candidate.item_id
        credit = weights.get(candidate.source, 0.0) / (offset + candidate.rank)
        total = totals.get(item)
        if total is None:
            totals[item], best[item] = credit, (credit, candidate)
        else:
            totals[item] = total + credit
            if credit > best[item][0]:
                best[item] = (credit, candidate)
    if boost:
        totals = {item: total * boost.get(item, 1.0) for item, total in totals.items()}
    order = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))
    return [Scored(item, total, best[item][1].source, best[item][1].because) for item, total in order]
