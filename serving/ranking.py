"""Merge the candidates of every source into one ranking (the blend of ``FunnelConfig``)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.candidates import Candidate
from serving.config import FunnelConfig


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    source: str  # the source that contributed most: it names the explanation
    because: str


def blend(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None) -> list[Scored]:
    """Each item once, scored by the sum of its sources' rank credits, best first (ties by item id).

    ``boost`` multiplies chosen items' scores (cold start: the onboarding categories).
    """
    totals: dict[str, float] = {}
    best: dict[str, tuple[float, Candidate]] = {}
    for candidate in candidates:
        credit = config.weights.get(candidate.source, 0.0) / (config.rank_offset + candidate.rank)
        totals[candidate.item_id] = totals.get(candidate.item_id, 0.0) + credit
        if candidate.item_id not in best or credit > best[candidate.item_id][0]:
            best[candidate.item_id] = (credit, candidate)
    boost = boost or {}
    scored = [
        Scored(item, total * boost.get(item, 1.0), best[item][1].source, best[item][1].because)
        for item, total in totals.items()
    ]
    return sorted(scored, key=lambda s: (-s.score, s.item_id))
