"""The learned ranker: a logistic regression over per-candidate features serving has at request time.

A model version may carry one (``ranker.json``, written by ``training.learned_ranker`` from a
replay's validation split). When the loaded version has it, ``serving.ranking.ranking`` orders a
known user's candidates by its score instead of the documented blend; without it, the blend ranks.

The features are rank-based wherever a raw score is on a model-specific scale: the ranker is
fitted on one model's candidates (the validation refit) and applied to another's (the version it
ships with). The two-tower's score enters only as a z-score within the request's two-tower
candidates. Scoring is one standardised matrix-vector product in numpy.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kapparec.timeunits import DAY_MS
from serving.config import SOURCES

if TYPE_CHECKING:  # serving.model loads rankers, and the candidates module imports serving.model
    from featurestore.reader import UserFeatures
    from serving.candidates import Candidate
    from serving.snapshot import Snapshot

RANKER_FILE = "ranker.json"
# History entries whose categories make the user's category affinity.
AFFINITY_HISTORY = 50
INTERACTIONS = ("two_tower", "co_occurrence")  # sources whose credit is also crossed with the history length

FEATURES: tuple[str, ...] = (
    *(f"in.{source}" for source in SOURCES),  # the source proposed the item
    *(f"rr.{source}" for source in SOURCES),  # 1 / (1 + the item's rank in that source), 0 if absent
    "two_tower.log_rank",  # log(1 + rank) among the two-tower's candidates, 0 if absent
    "two_tower.score_z",  # the two-tower score's z-score within the request's two-tower candidates
    "sources",  # how many sources proposed the item
    "popularity",  # log(1 + decayed popularity) / log(1 + the top item's), 0 off the list
    "age.log_days",  # log(1 + days since the item was created, on the log clock)
    "category_affinity",  # the largest share of the user's recent history in one of the item's categories
    *(f"rr.{source}.x_history" for source in INTERACTIONS),  # rr x log(1 + history length)
)
COLUMN = {name: column for column, name in enumerate(FEATURES)}
IN, RR = COLUMN[f"in.{SOURCES[0]}"], COLUMN[f"rr.{SOURCES[0]}"]
SOURCE_INDEX = {source: n for n, source in enumerate(SOURCES)}


class RankerFileError(ValueError):
    """A ranker file that cannot score: its one-line message names what is wrong."""


@dataclass(frozen=True)
class CandidateFeatures:
    items: list[str]  # one row of ``matrix`` per distinct item, in first-proposed order
    matrix: np.ndarray  # (len(items), len(FEATURES)) float64
    proposals: list[list[Candidate]]  # each item's candidates, for naming its source


def candidate_features(candidates: list[Candidate], user: UserFeatures, snapshot: Snapshot,
                       region: str) -> CandidateFeatures:
    """The feature rows of the distinct items of ``candidates`` for ``user``'s request."""
    row_of: dict[str, int] = {}
    proposals: list[list[Candidate]] = []
    for candidate in candidates:
        row = row_of.setdefault(candidate.item_id, len(row_of))
        if row == len(proposals):
            proposals.append([])
        proposals[row].append(candidate)
    items = list(row_of)
    matrix = np.zeros((len(items), len(FEATURES)))
    rows = np.fromiter((row_of[c.item_id] for c in candidates), dtype=np.int64, count=len(candidates))
    sources = np.fromiter((SOURCE_INDEX[c.source] for c in candidates), dtype=np.int64, count=len(candidates))
    ranks = np.fromiter((c.rank for c in candidates), dtype=np.float64, count=len(candidates))
    # A source proposes an item at most once in practice; where it does twice, the better rank counts.
    np.maximum.at(matrix, (rows, IN + sources), 1.0)
    np.maximum.at(matrix, (rows, RR + sources), 1.0 / (1.0 + ranks))
    tower = sources == SOURCE_INDEX["two_tower"]
    if tower.any():
        scores = np.fromiter((c.score for c in candidates), dtype=np.float64, count=len(candidates))[tower]
        spread = scores.std()
        matrix[rows[tower], COLUMN["two_tower.log_rank"]] = np.log1p(ranks[tower])
        matrix[rows[tower], COLUMN["two_tower.score_z"]] = (scores - scores.mean()) / spread if spread > 0 else 0.0
    matrix[:, COLUMN["sources"]] = matrix[:, IN:IN + len(SOURCES)].sum(axis=1)
    popularity = snapshot.derived(("ranker.popularity", region), lambda: _popularity(snapshot, region))
    matrix[:, COLUMN["popularity"]] = [popularity.get(item, 0.0) for item in items]
    catalog = snapshot.catalog
    created = np.array([catalog.get(item, {}).get("created_at", snapshot.log_clock_ms) for item in items], dtype=np.float64)
    matrix[:, COLUMN["age.log_days"]] = np.log1p(np.maximum(0.0, snapshot.log_clock_ms - created) / DAY_MS)
    shares = _category_shares(user, catalog)
    matrix[:, COLUMN["category_affinity"]] = [
        max((shares.get(c, 0.0) for c in catalog.get(item, {}).get("categories") or ()), default=0.0) for item in items]
    history = math.log1p(len(user.history))
    for source in INTERACTIONS:
        matrix[:, COLUMN[f"rr.{source}.x_history"]] = matrix[:, COLUMN[f"rr.{source}"]] * history
    return CandidateFeatures(items, matrix, proposals)


def _popularity(snapshot: Snapshot, region: str) -> dict[str, float]:
    ranked = snapshot.popular_in(region)
    top = math.log1p(max(ranked[0][1], 0.0)) if ranked else 0.0
    return {item: math.log1p(max(score, 0.0)) / top for item, score in ranked} if top > 0 else {}


def _category_shares(user: UserFeatures, catalog: dict[str, dict]) -> dict[str, float]:
    recent = user.tower_history(AFFINITY_HISTORY)
    counts = Counter(c for item in recent for c in catalog.get(item, {}).get("categories") or ())
    return {category: count / len(recent) for category, count in counts.items()} if recent else {}


@dataclass(frozen=True)
class LearnedRanker:
    """Standardised features times coefficients: a higher score ranks first."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    record: dict = field(default_factory=dict)  # how it was fitted and chosen (training's report)

    sources = frozenset(SOURCES)  # the ranker weighs every source, so every source is generated

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return ((matrix - self.mean) / self.scale) @ self.coef

    def rank(self, candidates: list[Candidate], user: UserFeatures, snapshot: Snapshot,
             region: str) -> tuple[dict[str, float], dict[str, Candidate]]:
        """Each distinct item's score, and the candidate that names its source: the proposal whose
        reciprocal-rank term adds most to the score."""
        features = candidate_features(candidates, user, snapshot, region)
        scores = self.scores(features.matrix)
        rr_weight = self.coef[RR:RR + len(SOURCES)] / self.scale[RR:RR + len(SOURCES)]
        best = {item: max(proposed, key=lambda c: rr_weight[SOURCE_INDEX[c.source]] / (1.0 + c.rank))
                for item, proposed in zip(features.items, features.proposals)}
        return dict(zip(features.items, scores.tolist())), best

    def save(self, path: Path) -> None:
        payload = {"features": list(FEATURES), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                   "coef": self.coef.tolist(), "record": self.record}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "LearnedRanker":
        try:
            payload = json.loads(path.read_text())
            features = payload["features"]
            arrays = [np.asarray(payload[key], dtype=np.float64) for key in ("mean", "scale", "coef")]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RankerFileError(f"{path.name} is unreadable: {type(exc).__name__}: {exc}") from None
        if features != list(FEATURES):
            raise RankerFileError(f"{path.name} was fitted on other features than this serving code computes")
        if any(a.shape != (len(FEATURES),) or not np.isfinite(a).all() for a in arrays) or (arrays[1] <= 0).any():
            raise RankerFileError(f"{path.name} holds arrays that are not {len(FEATURES)} finite numbers, or a scale <= 0")
        return cls(*arrays, record=payload.get("record") or {})
