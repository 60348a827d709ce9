"""The learned ranker's features: per candidate, what serving has at request time, and the ranking by them.

A model version may carry a ranker (``modelfiles.ranker``, written by ``training.learned_ranker``
from a replay's validation split, with these features computed by the funnel over the replay).
When the loaded version has it, ``serving.ranking.ranking`` orders a known user's candidates by
its score instead of the documented blend; without it, the blend ranks.

The features are rank-based wherever a raw score is on a model-specific scale: the ranker is
fitted on one model's candidates (the validation refit) and applied to another's (the version it
ships with). The two-tower's score enters only as a z-score within the request's two-tower
candidates. Scoring is one standardised matrix-vector product in numpy.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kapparec.timeunits import DAY_MS
from modelfiles.ranker import LearnedRanker
from serving.ranking import Learned
from serving.request import SOURCES, Candidate

if TYPE_CHECKING:
    from featurestore.reader import UserFeatures
    from serving.snapshot import Snapshot

# History entries whose categories make the user's category affinity.
AFFINITY_HISTORY = 50
INTERACTIONS = ("two_tower", "co_occurrence")  # sources whose credit is also crossed with the history length

FEATURES: tuple[str, ...] = (
    *(f"in.{source}" for source in SOURCES),  # the source proposed the item
    *(f"rr.{source}" for source in SOURCES),  # 1 / (1 + the item's rank in that source), 0 if absent
    "two_tower.log_rank",  # log(1 + rank) among the two-tower's candidates, 0 if absent
    "two_tower.score_z",  # the two-tower score's z-score within the request's two-tower candidates
    "sources",  # how many sources proposed the item
    "co_occurrence.proposals",  # how many of the user's recent items have it among their neighbours
    "popularity",  # log(1 + decayed popularity) / log(1 + the top item's), 0 off the list
    "age.log_days",  # log(1 + days since the item was created, on the log clock)
    "category_affinity",  # the largest share of the user's recent history in one of the item's categories
    *(f"rr.{source}.x_history" for source in INTERACTIONS),  # rr x log(1 + history length)
)
COLUMN = {name: column for column, name in enumerate(FEATURES)}
IN, RR = COLUMN[f"in.{SOURCES[0]}"], COLUMN[f"rr.{SOURCES[0]}"]
SOURCE_INDEX = {source: n for n, source in enumerate(SOURCES)}
RANKED_SOURCES = frozenset(SOURCES)  # a learned ranker weighs every source, so every source is generated


@dataclass(frozen=True)
class CandidateFeatures:
    items: list[str]  # one row of ``matrix`` per distinct item, in first-proposed order
    matrix: np.ndarray  # (len(items), len(FEATURES)) float64
    rows: np.ndarray  # each candidate's row
    sources: np.ndarray  # each candidate's source, as an index into SOURCES
    ranks: np.ndarray  # each candidate's rank within its source


@dataclass(frozen=True)
class CatalogColumns:
    """The catalog as arrays, built once per snapshot: a request then looks each candidate up once."""

    row_of: dict[str, int]  # item -> row; items off the catalog share the last row
    created_at: np.ndarray  # per row, ms (the log clock for the unknown row: age 0)
    categories: np.ndarray  # per row, category indices padded with -1
    category_count: int

    @classmethod
    def of(cls, snapshot: Snapshot) -> "CatalogColumns":
        catalog = snapshot.catalog
        index: dict[str, int] = {}
        listed = [[index.setdefault(c, len(index)) for c in entry.get("categories") or ()] for entry in catalog.values()]
        categories = np.full((len(catalog) + 1, max(map(len, listed), default=0) or 1), -1, dtype=np.int64)
        for row, found in enumerate(listed):
            categories[row, : len(found)] = found
        created = [float(entry.get("created_at", snapshot.log_clock_ms)) for entry in catalog.values()]
        return cls({item: row for row, item in enumerate(catalog)}, np.array([*created, snapshot.log_clock_ms]),
                   categories, len(index))

    def rows(self, items: list[str]) -> np.ndarray:
        unknown = itertools.repeat(len(self.created_at) - 1)
        return np.fromiter(map(self.row_of.get, items, unknown), dtype=np.int64, count=len(items))

    def affinity(self, item_rows: np.ndarray, history_rows: np.ndarray) -> np.ndarray:
        """Per item, the largest share of the history items that are in one of its categories."""
        if not len(history_rows):
            return np.zeros(len(item_rows))
        held = self.categories[history_rows].ravel()
        shares = np.bincount(held[held >= 0], minlength=self.category_count) / len(history_rows)
        return np.append(shares, 0.0)[self.categories[item_rows]].max(axis=1)  # -1 (padding) reads the 0


def candidate_features(candidates: list[Candidate], user: UserFeatures, snapshot: Snapshot,
                       region: str) -> CandidateFeatures:
    """The feature rows of the distinct items of ``candidates`` for ``user``'s request."""
    item_ids, source_names, rank_list, _, score_list = zip(*candidates) if candidates else ((),) * 5
    items = list(dict.fromkeys(item_ids))  # distinct, in first-proposed order
    row_of = dict(zip(items, range(len(items))))
    rows = np.fromiter(map(row_of.__getitem__, item_ids), dtype=np.int64, count=len(item_ids))
    sources = np.fromiter(map(SOURCE_INDEX.__getitem__, source_names), dtype=np.int64, count=len(source_names))
    ranks = np.array(rank_list, dtype=np.float64)
    matrix = np.zeros((len(items), len(FEATURES)))
    # Where a source proposes an item twice (co-occurrence: the neighbour of two recent items), the better rank counts.
    np.maximum.at(matrix, (rows, IN + sources), 1.0)
    np.maximum.at(matrix, (rows, RR + sources), 1.0 / (1.0 + ranks))
    tower = sources == SOURCE_INDEX["two_tower"]
    if tower.any():
        scores = np.array(score_list, dtype=np.float64)[tower]
        spread = scores.std()
        matrix[rows[tower], COLUMN["two_tower.log_rank"]] = np.log1p(ranks[tower])
        matrix[rows[tower], COLUMN["two_tower.score_z"]] = (scores - scores.mean()) / spread if spread > 0 else 0.0
    matrix[:, COLUMN["sources"]] = matrix[:, IN:IN + len(SOURCES)].sum(axis=1)
    neighbours = sources == SOURCE_INDEX["co_occurrence"]
    np.add.at(matrix[:, COLUMN["co_occurrence.proposals"]], rows[neighbours], 1.0)
    columns = snapshot.derived("ranker.catalog", lambda: CatalogColumns.of(snapshot))
    popularity = snapshot.derived(("ranker.popularity", region), lambda: _popularity(snapshot, region, columns))
    catalog_rows = columns.rows(items)
    matrix[:, COLUMN["popularity"]] = popularity[catalog_rows]
    age_ms = np.maximum(0.0, snapshot.log_clock_ms - columns.created_at[catalog_rows])
    matrix[:, COLUMN["age.log_days"]] = np.log1p(age_ms / DAY_MS)
    matrix[:, COLUMN["category_affinity"]] = columns.affinity(
        catalog_rows, columns.rows(user.tower_history(AFFINITY_HISTORY)))
    history = math.log1p(len(user.history))
    for source in INTERACTIONS:
        matrix[:, COLUMN[f"rr.{source}.x_history"]] = matrix[:, COLUMN[f"rr.{source}"]] * history
    return CandidateFeatures(items, matrix, rows, sources, ranks)


def _popularity(snapshot: Snapshot, region: str, columns: CatalogColumns) -> np.ndarray:
    """Per catalog row, log(1 + decayed popularity) / log(1 + the top item's); 0 off the list."""
    found = np.zeros(len(columns.created_at))
    ranked = snapshot.popular_in(region)
    top = math.log1p(max(ranked[0][1], 0.0)) if ranked else 0.0
    if top > 0:
        listed = [(columns.row_of[item], math.log1p(max(score, 0.0)) / top) for item, score in ranked
                  if item in columns.row_of]
        if listed:
            where, value = zip(*listed)
            found[list(where)] = value
    return found


def ranked(ranker: LearnedRanker, candidates: list[Candidate], user: UserFeatures, snapshot: Snapshot,
           region: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each distinct item (in first-proposed order), its score by ``ranker``, and the position in
    ``candidates`` of the proposal that names its source: the one whose reciprocal-rank term adds
    most to the score."""
    features = candidate_features(candidates, user, snapshot, region)
    scores = ranker.scores(features.matrix)
    rr_weight = ranker.coef[RR:RR + len(SOURCES)] / ranker.scale[RR:RR + len(SOURCES)]
    adds = rr_weight[features.sources] / (1.0 + features.ranks)
    order = np.lexsort((-adds, features.rows))  # by row, the largest addition first
    firsts = order[np.flatnonzero(np.diff(features.rows[order], prepend=-1))]
    return features.items, scores, firsts


def for_request(ranker: LearnedRanker, user: UserFeatures, snapshot: Snapshot, region: str) -> Learned:
    """``ranker`` bound to one request: what ``serving.ranking`` scores a pool with."""
    return lambda pool: ranked(ranker, pool.candidates(), user, snapshot, region)


def load_ranker(path: Path) -> LearnedRanker:
    """The ranker file of a model version, checked against the features this code computes."""
    return LearnedRanker.load(path, FEATURES)
