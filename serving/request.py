"""The request path's types: what a request asks, the candidate pool, the scored rows and the page.

Nothing of the project is imported here, so every stage, the service and offline evaluation can
share these types without an import cycle. Candidates and scored rows are columns (numpy arrays
over catalog rows) because a request holds a few hundred of them: per-candidate Python objects
were most of a request's CPU. Only the page's final items become Python objects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

SOURCES = ("two_tower", "co_occurrence", "continue_watching", "trending", "popular", "new_item")
SOURCE_CODE = {source: code for code, source in enumerate(SOURCES)}
# Where an item is not in the snapshot's catalog: it cannot be filtered, titled or shown.
UNKNOWN_ROW = -1


@dataclass(frozen=True)
class Filters:
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    max_age_rating: str = ""  # "" = no limit
    exclude_item_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    user_id: str
    k: int = 20
    page: str = "home"
    region: str = ""
    device: str = ""
    current_item_id: str = ""
    filters: Filters = field(default_factory=Filters)
    onboarding_categories: tuple[str, ...] = ()
    # When the request is made, for the user tower's hour of day; None: now, on the log's clock.
    request_time_ms: int | None = None


# One proposal as the learned ranker's features read it (training builds its examples from these).
class Candidate(NamedTuple):
    item_id: str
    source: str
    rank: int  # 0 = the source's best
    because: str = ""  # the item that brought it (co-occurrence, two-tower), for the explanation
    score: float = 0.0  # the source's own score where the learned ranker reads it (the two-tower's dot product)


@dataclass(frozen=True)
class Pool:
    """A request's candidates as columns, in proposal order (the blend's tie rule reads that order)."""

    ids: list[str]
    rows: np.ndarray  # catalog row per candidate (UNKNOWN_ROW off the catalog), int64
    sources: np.ndarray  # SOURCE_CODE per candidate, int64
    ranks: np.ndarray  # rank within its source, 0 = best, int64
    because: list[str]  # the item that brought it ("" for none)
    scores: np.ndarray  # the source's own score (the two-tower's dot product; 0 elsewhere), float64

    @classmethod
    def of(cls, source: str, ids: list[str], rows: np.ndarray, because: list[str] | None = None,
           scores: np.ndarray | None = None) -> "Pool":
        """One source's candidates, ranked by their order in ``ids``."""
        n = len(ids)
        return cls(ids, rows, np.full(n, SOURCE_CODE[source], dtype=np.int64), np.arange(n, dtype=np.int64),
                   because if because is not None else [""] * n,
                   scores if scores is not None else np.zeros(n))

    @classmethod
    def of_candidates(cls, candidates: list[Candidate], rows: np.ndarray) -> "Pool":
        """``candidates`` as columns; ``rows``: each one's catalog row."""
        ids, sources, ranks, because, scores = (list(column) for column in zip(*candidates)) if candidates else ([],) * 5
        return cls(ids, rows, np.array([SOURCE_CODE[s] for s in sources], dtype=np.int64),
                   np.array(ranks, dtype=np.int64), because, np.array(scores, dtype=np.float64))

    @classmethod
    def joined(cls, pools: list["Pool"]) -> "Pool":
        if len(pools) == 1:
            return pools[0]
        if not pools:
            return cls.of_candidates([], np.zeros(0, dtype=np.int64))
        ids, because = [], []
        for pool in pools:  # list extends, not a Python step per candidate
            ids += pool.ids
            because += pool.because
        return cls(ids, np.concatenate([p.rows for p in pools]), np.concatenate([p.sources for p in pools]),
                   np.concatenate([p.ranks for p in pools]), because, np.concatenate([p.scores for p in pools]))

    def __len__(self) -> int:
        return len(self.ids)

    def counts(self) -> Counter:
        """How many candidates each source proposed (a source that proposed none is absent)."""
        codes, counts = np.unique(self.sources, return_counts=True)
        return Counter({SOURCES[code]: count for code, count in zip(codes.tolist(), counts.tolist())})

    def candidates(self) -> list[Candidate]:
        return list(map(Candidate, self.ids, (SOURCES[code] for code in self.sources.tolist()), self.ranks.tolist(),
                        self.because, self.scores.tolist()))


@dataclass(frozen=True)
class Scored:
    """Items in page order as columns: catalog row, score, the source that names it and why."""

    rows: np.ndarray  # int64
    scores: np.ndarray  # float64
    sources: np.ndarray  # SOURCE_CODE, int64
    because: np.ndarray  # int64 position in ``reasons`` of the item that brought it, -1 for none
    reasons: list[str]  # the pool's ``because``, shared: a page's few items look theirs up at the end

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: np.ndarray) -> "Scored":
        return Scored(self.rows[positions], self.scores[positions], self.sources[positions], self.because[positions],
                      self.reasons)

    def like(self, rows: np.ndarray, source: str, scores: np.ndarray | None = None) -> "Scored":
        """``rows`` from ``source`` with nothing that brought them, to join this ranking (fill, exploration)."""
        n = len(rows)
        return Scored(rows, scores if scores is not None else np.zeros(n), np.full(n, SOURCE_CODE[source], np.int64),
                      np.full(n, -1, np.int64), self.reasons)

    def __add__(self, other: "Scored") -> "Scored":
        return Scored(np.concatenate([self.rows, other.rows]), np.concatenate([self.scores, other.scores]),
                      np.concatenate([self.sources, other.sources]), np.concatenate([self.because, other.because]),
                      self.reasons)

    def reason(self, n: int) -> str:
        position = int(self.because[n])
        return self.reasons[position] if position >= 0 else ""


class RankedItem(NamedTuple):
    item_id: str
    score: float
    source: str
    explanation: str
    title: str = ""


@dataclass(frozen=True)
class Page:
    items: list[RankedItem]
    served_from: str  # "full" | "degraded" | "cached"
    widened: bool = False
    candidates: Counter = field(default_factory=Counter)  # how many candidates each source proposed
