"""Merge the candidates of every source into one ranking: the blend of ``FunnelConfig``, or the
scores of a learned ranker (``serving.ranker``) where the served model version carries one."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
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


class Scores(NamedTuple):
    """A request's ranking before it is ordered: each item's score and the candidate naming its source."""

    totals: dict[str, float]
    best: dict[str, Candidate]


class Blended(NamedTuple):
    """The blend of a pool's first ``size`` candidates, which later candidates add their credits to:
    the shared lists' part of every request's pool, blended once per snapshot (``Funnel``)."""

    size: int
    totals: dict[str, float]
    best: dict[str, Candidate]
    best_credit: dict[str, float]


def blend(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None) -> list[Scored]:
    """Each item once, scored by the sum of its sources' rank credits, best first (ties by item id).

    ``boost`` multiplies chosen items' scores (cold start: the onboarding categories).
    """
    return list(ranking(candidates, config, boost))


def ranking(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None,
            learned: Learned | None = None) -> Iterator[Scored]:
    """``blend`` (or ``learned``'s scores), as an iterator: the request path reads only as far down
    the ranking as its page needs."""
    return ordered(scores(candidates, config, boost, learned))


def scores(candidates: list[Candidate], config: FunnelConfig, boost: dict[str, float] | None = None,
           learned: Learned | None = None, shared: Blended | None = None) -> Scores:
    """The scores ``ranking`` orders. ``shared``: the blend of ``candidates[:shared.size]`` (ignored
    by ``learned``, which scores the whole pool): only the candidates after them are blended here."""
    totals, best = learned(candidates) if learned else _blended(candidates, config, shared)
    if boost:
        totals = {item: total * boost.get(item, 1.0) for item, total in totals.items()}
    return Scores(totals, best)


def ordered(scored: Scores, among: Container[str] | None = None) -> Iterator[Scored]:
    """Best first, ties by item id; ``among``: only those items, in the same order (an item's score
    does not depend on which other items are ranked)."""
    totals, best = scored
    pairs = totals.items() if among is None else [(item, totals[item]) for item in totals.keys() & among]
    # Two stable sorts (by id, then by score descending) give score order with ties by id. (Sorting
    # by score alone and each run of equal scores lazily was cheaper only for shallow reads.)
    order = sorted(pairs, key=itemgetter(0))
    order.sort(key=itemgetter(1), reverse=True)
    return (Scored(item, total, best[item].source, best[item].because) for item, total in order)


_NOTHING_BLENDED = Blended(0, {}, {}, {})


def blended(candidates: list[Candidate], config: FunnelConfig) -> Blended:
    """``candidates`` blended, for later candidates to add to (``scores(shared=...)``)."""
    return Blended(len(candidates), *_credits(candidates, config, {}, {}, {}))


def _blended(candidates: list[Candidate], config: FunnelConfig, shared: Blended | None
             ) -> tuple[dict[str, float], dict[str, Candidate]]:
    """Each item's sum of rank credits, and its candidate with the largest credit."""
    start = shared or _NOTHING_BLENDED
    totals, best, _ = _credits(candidates[start.size:], config, dict(start.totals), dict(start.best),
                               dict(start.best_credit))
    return totals, best


def _credits(candidates: list[Candidate], config: FunnelConfig, totals: dict[str, float], best: dict[str, Candidate],
             best_credit: dict[str, float]) -> tuple[dict[str, float], dict[str, Candidate], dict[str, float]]:
    """``candidates``' rank credits added into ``totals``, ``best`` and ``best_credit`` (changed in place).
    A tie keeps the earlier candidate, so blending a pool in two parts gives what one pass gives."""
    weights, offset = config.weights, config.rank_offset
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
    return totals, best, best_credit
