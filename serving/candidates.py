"""Candidate generators: each proposes items from one source, ranked within that source."""

from __future__ import annotations

from typing import NamedTuple

from featurestore.reader import UserFeatures
from serving.model import ServingModel
from serving.snapshot import Ranked


# A tuple: hundreds per request, and a frozen dataclass costs 4x to build. The request path builds
# them with positional arguments: keyword arguments double the cost of a namedtuple.
class Candidate(NamedTuple):
    item_id: str
    source: str
    rank: int  # 0 = the source's best
    because: str = ""  # the item that brought it (co-occurrence, two-tower), for the explanation
    score: float = 0.0  # the source's own score where the learned ranker reads it (the two-tower's dot product)


def ranked(source: str, items: Ranked, n: int) -> list[Candidate]:
    return [Candidate(item, source, rank) for rank, (item, _) in enumerate(items[:n])]


def two_tower(model: ServingModel, user_id: str, history: list[str], region: str, device: str, hour: int,
              n: int) -> list[Candidate]:
    hits = model.search(model.embed_user(user_id, history, region, device, hour), n)
    return [Candidate(item, "two_tower", rank, "", score) for rank, (item, score) in enumerate(hits)]


def co_occurrence(neighbours: list[Ranked], recent: list[str]) -> list[Candidate]:
    """The neighbours of each recent item (``neighbours[i]`` those of ``recent[i]``), interleaved so
    that every recent item gets its turn."""
    found = []
    for rank in range(max(map(len, neighbours), default=0)):
        for item, items in zip(recent, neighbours):
            if rank < len(items):
                found.append(Candidate(items[rank][0], "co_occurrence", len(found), item))
    return found


def continue_watching(user: UserFeatures) -> list[Candidate]:
    return [Candidate(item, "continue_watching", rank) for rank, (item, _) in enumerate(user.continue_watching)]
