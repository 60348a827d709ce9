"""The serving funnel measured offline: the ranking code ``Recommend`` runs, on the evaluation protocol.

Nothing here ranks, and nothing of serving but ``serving.funnel`` is imported. Its ``OfflineFunnels``
builds each ``Funnel`` exactly as ``kapparec serve`` does: a ``FeatureReader`` over a feature
version, a ``ServingModel`` loaded from a registry version (user tower, item embeddings, ScaNN
index) and a snapshot of the shared lists. The only differences are where those come from: the
features are the training part of the log replayed through the feature pipeline
(``training.feature_replay``), so nothing held out leaks, and the model is the evaluated
two-tower, exported to a private registry. Each test user's page of
``max(k_values)`` items is their ranking; items off the page rank nowhere. The protocol strikes
each user's training items from every ranking, so the funnel is told them as the request's
explicit exclusions (a field ``Recommend`` has): otherwise the items its store does not hold as
seen (those beyond ``seen_limit``, or logged in the same millisecond as the first held-out one)
would take page slots that the protocol then empties, a cost the full-catalog rows never pay.

The blend is chosen on validation only: the training part is split again (each user's last
``holdout`` training positives), a two-tower with the evaluated configuration is fitted on what
remains, the features of what remains are replayed, and a coordinate ascent over the funnel's
knobs, from the two-tower's candidates alone, keeps each change that raises recall@10 on half of
the validation users (the search half) by more than its standard error. Dozens of trials each
get that chance, so some win by noise alone: the searched blend replaces the start only if it
also beats it on the other half (the confirmation half), which no trial was chosen on. A learned ranker (``training.learned_ranker``) is then
fitted on the same validation funnel's candidates and adopted only if it beats that blend by the
same rule; it is exported with the evaluated model's version, and the funnel ranks with it as
``Recommend`` does. The test split is measured once, with the chosen knobs (and ranker), over the
features and model of the whole training part.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from featurestore.reader import FeatureReader
from modelfiles.ranker import RANKER_FILE, LearnedRanker
from modelfiles.registry import ModelRegistry
from serving.funnel import Filters, Funnel, FunnelConfig, OfflineFunnels, Query, ServingModel
from training.data import Interactions
from training.evaluate import ScoreBatch, clearly_better, measure, measure_per_user
from training.feature_replay import replayed_features
from training.learned_ranker import METRIC, choose_ranker
from training.split import Split, chronological_split
from training.two_tower.export import export_two_tower
from training.two_tower.train import TwoTowerRecommender

NAME = "funnel"
# Users whose queries measure the exported index's recall against exact search.
INDEX_QUERY_USERS = 500

# Where the validation search starts: the two-tower's candidates alone, undiversified, with no
# page kept for new items. Every other source, the diversity cap and exploration must then earn
# their place on validation; starting from the serving defaults instead kept whatever no single
# step could prove harmful.
START: dict[str, Any] = {"weights.co_occurrence": 0.0, "weights.continue_watching": 0.0, "weights.trending": 0.0,
                         "weights.popular": 0.0, "weights.new_item": 0.0, "max_per_category": 0,
                         "exploration_share": 0.0}
# The knobs the validation search walks, in the order it walks them, each with its values.
# The two-tower's weight stays 1: the blend is rank-based, so only the ratios of weights matter.
BLEND_KNOBS: dict[str, tuple[Any, ...]] = {
    "weights.co_occurrence": (0.0, 0.1, 0.2, 0.3, 0.6, 1.0, 2.0),
    "rank_offset": (1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
    "weights.continue_watching": (0.0, 0.5, 2.0),
    "weights.popular": (0.0, 0.05, 0.15, 0.5),
    "weights.trending": (0.0, 0.1, 0.3, 1.0),
    "weights.new_item": (0.0, 0.1, 0.2),
    "max_per_category": (0, 3, 5),
    "exploration_share": (0.0, 0.05, 0.1),
    "recent_items": (1, 3, 5, 10),
    "neighbours_per_item": (10, 20, 50),
    "two_tower_candidates": (50, 100, 200),
}
# Passes of the coordinate ascent: a knob chosen early is revisited once the later ones moved.
BLEND_PASSES = 2


@dataclass
class OfflineFunnel:
    """The serving funnel over one replayed feature version and one exported model."""

    funnels: OfflineFunnels  # the serving funnels over the replayed features and the exported model
    items: list[str]  # the ranking universe (the split's known items), as score columns
    # Each user's latest activity in the replayed part: when they come back for the page (the
    # two-tower's own evaluation queries the same hour).
    request_times: dict[str, int]
    # Each user's training items, which the protocol strikes from their ranking: the page's exclusions.
    excluded: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        self._columns = {item: column for column, item in enumerate(self.items)}

    @property
    def reader(self) -> FeatureReader:
        return self.funnels.reader

    @property
    def model(self) -> ServingModel:
        """The exported model as serving loaded it."""
        return self.funnels.model

    def funnel(self, config: FunnelConfig, model: ServingModel | None = None) -> Funnel:
        """The serving funnel under ``config``, with ``model`` (default: the exported one, with its ranker if any)."""
        return self.funnels.funnel(config, model)

    def query(self, user: str, k: int) -> Query:
        return Query(user, k=k, request_time_ms=self.request_times.get(user),
                     filters=Filters(exclude_item_ids=self.excluded.get(user, ())))

    def scorer(self, config: FunnelConfig, page_size: int,
               model_of: Callable[[str], ServingModel] | None = None) -> ScoreBatch:
        """Each user's funnel page as scores: ``page_size`` down to 1 by rank, -inf off the page.

        ``model_of``: the model that serves each user (default: the exported one for all)."""
        funnels: dict[int, Funnel] = {}

        def funnel_for(user: str) -> Funnel:
            model = model_of(user) if model_of else self.model
            if id(model) not in funnels:
                funnels[id(model)] = self.funnel(config, model)
            return funnels[id(model)]

        def score(users: list[str]) -> np.ndarray:
            scores = np.full((len(users), len(self.items)), -np.inf, dtype=np.float32)
            for row, user in enumerate(users):
                page = funnel_for(user).recommend(self.query(user, page_size))
                for rank, item in enumerate(page.items):
                    column = self._columns.get(item.item_id)
                    if column is not None:
                        scores[row, column] = page_size - rank
            return scores

        return score


@contextlib.contextmanager
def offline_funnel(split: Split, model: TwoTowerRecommender, seed: int,
                   ranker: LearnedRanker | None = None) -> Iterator[OfflineFunnel]:
    """The funnel over ``split``'s training part: its replayed features and ``model`` exported with
    its index and ``ranker`` into one registry version, which serving's loader reads as ``kapparec serve`` does."""
    users = np.unique(split.train.user_ids)
    query_users = np.random.default_rng(seed).choice(users, min(INDEX_QUERY_USERS, len(users)), replace=False)
    with replayed_features(split.events, split.catalog) as features, \
            tempfile.TemporaryDirectory(prefix="kapparec-funnel-eval-") as models:
        registry = ModelRegistry(Path(models))
        def export(directory: Path) -> dict:
            exported = export_two_tower(model, directory, split.known_items, sorted(query_users.tolist()))
            if ranker is not None:
                ranker.save(directory / RANKER_FILE)
            return exported

        version = registry.register(export, metadata={"model": "two_tower", "purpose": "offline funnel evaluation"})
        yield OfflineFunnel(OfflineFunnels(features.reader(), version), split.known_items,
                            latest_activity(split.events), items_per_user(split.train))


def latest_activity(events: Interactions) -> dict[str, int]:
    """Each user's latest event time (``events`` is time-sorted, so the last row of a user wins)."""
    return dict(zip(events.user_ids.tolist(), events.event_times.tolist()))


def items_per_user(interactions: Interactions) -> dict[str, tuple[str, ...]]:
    """Each user's distinct items in ``interactions``."""
    items: dict[str, dict[str, None]] = {}
    for user, item in zip(interactions.user_ids.tolist(), interactions.item_ids.tolist()):
        items.setdefault(user, {})[item] = None
    return {user: tuple(found) for user, found in items.items()}


def choose_blend(funnel: OfflineFunnel, validation: Split, page_size: int,
                 seed: int = 0) -> tuple[FunnelConfig, dict, np.ndarray]:
    """The blend, its record and its per-user validation ``METRIC`` (users sorted, as ``measure_per_user``).

    The validation users are halved at random (``seed``). On the search half, a coordinate ascent
    from ``START``: each knob in turn takes the value with the best ``METRIC``, but only where that
    beats the configuration kept so far by more than one standard error of the paired per-user
    difference (smaller differences are noise on a few hundred users, and taking them fits the
    blend to it). Many trials each get that chance, so the ascent's result is kept only if it also
    beats ``START`` by that margin on the confirmation half, which chose nothing; else ``START``."""
    started = time.perf_counter()
    if len(validation.test) < 2:
        per_user, _ = measure_per_user(validation, funnel.scorer(config_of(START), page_size), k_values=(10,))
        return config_of(START), {"skipped": "fewer than two validation users: nothing to search on and confirm "
                                             "with, so the two-tower's candidates alone rank",
                                  "validation_users": len(validation.test), "chosen": dict(START)}, per_user[METRIC]
    search, confirmation = halves(validation, seed)
    trials: list[dict] = []

    def measured(overrides: dict[str, Any], users: Split = search) -> np.ndarray:
        per_user, _ = measure_per_user(users, funnel.scorer(config_of(overrides), page_size), k_values=(10,))
        return per_user[METRIC]

    def tried(overrides: dict[str, Any]) -> np.ndarray:
        scores = measured(overrides)
        trials.append({"overrides": dict(overrides), f"search_{METRIC}": round(float(scores.mean()), 6)})
        return scores

    searched, best = dict(START), tried(START)
    steps = [(knob, values) for _ in range(BLEND_PASSES) for knob, values in BLEND_KNOBS.items()]
    for knob, values in tqdm(steps, desc="search funnel blend", unit="knob"):
        current = searched.get(knob, _current(knob))
        for value in values:
            candidate = {**searched, knob: value}
            if value == current or any(trial["overrides"] == candidate for trial in trials):
                continue
            scores = tried(candidate)
            if clearly_better(scores, best):
                best, searched = scores, candidate
    confirmed = {"adopted": False}
    if searched != START:
        confirmed = confirmation_record(measured(searched, confirmation), measured(START, confirmation))
    chosen = searched if confirmed["adopted"] else dict(START)
    per_user, _ = measure_per_user(validation, funnel.scorer(config_of(chosen), page_size), k_values=(10,))
    record = {
        "search": "coordinate ascent over the funnel's knobs on the search half of the validation users, from the "
                  "two-tower's candidates alone; a change is kept when it beats the kept configuration by more than "
                  "one standard error of the paired per-user difference. The searched blend is chosen only if it "
                  "also beats the start so on the confirmation half; else the start is",
        "metric": f"validation {METRIC}",
        "validation_users": len(validation.test),
        "search_users": len(search.test),
        "confirmation_users": len(confirmation.test),
        "seconds": round(time.perf_counter() - started, 1),
        "trials_run": len(trials),
        "trials": trials,
        "searched": searched,
        f"search_{METRIC}": round(float(best.mean()), 6),
        "confirmation": confirmed,
        "chosen": chosen,
        f"validation_{METRIC}": round(float(per_user[METRIC].mean()), 6),
    }
    return config_of(chosen), record, per_user[METRIC]


def halves(split: Split, seed: int) -> tuple[Split, Split]:
    """``split`` twice, each with a random half of its test users (``seed``)."""
    users = sorted(split.test)
    order = np.random.default_rng(seed).permutation(len(users))
    return tuple(replace(split, test={users[n]: split.test[users[n]] for n in sorted(half.tolist())})
                 for half in np.array_split(order, 2))


def confirmation_record(searched: np.ndarray, start: np.ndarray) -> dict:
    """The searched blend against the start on the confirmation half: both figures, and whether it clearly wins."""
    difference = searched - start
    return {f"searched_{METRIC}": round(float(searched.mean()), 6), f"start_{METRIC}": round(float(start.mean()), 6),
            "paired_se": round(float(difference.std(ddof=1) / np.sqrt(len(difference))), 6),
            "adopted": clearly_better(searched, start)}


def config_of(overrides: dict[str, Any]) -> FunnelConfig:
    """A ``FunnelConfig`` from flat knobs (``weights.<source>`` sets one source's weight)."""
    weights = {knob.split(".", 1)[1]: value for knob, value in overrides.items() if knob.startswith("weights.")}
    rest = {knob: value for knob, value in overrides.items() if not knob.startswith("weights.")}
    return FunnelConfig.from_overrides({**rest, **({"weights": weights} if weights else {})})


def _current(knob: str) -> Any:
    defaults = FunnelConfig()
    if knob.startswith("weights."):
        return defaults.weights.get(knob.split(".", 1)[1], 0.0)
    return getattr(defaults, knob)


def evaluate_funnel(split: Split, two_tower: TwoTowerRecommender, k_values: Sequence[int] = (10, 50),
                    seed: int = 0) -> dict:
    """The funnel's row of the evaluation: its metrics on ``split``'s test users, and how its blend was chosen.

    ``two_tower`` is the evaluated two-tower, fitted on ``split.train``; its configuration is
    refitted on the validation split's training part for the blend search.
    """
    page_size = max(k_values)
    started = time.perf_counter()
    validation = chronological_split(split.train, split.min_interactions, split.holdout, split.catalog,
                                     events=split.events)
    if validation.test:
        tuning_model = TwoTowerRecommender(two_tower.params, progress=True)
        tuning_model.fit(validation.train, split.catalog, events=validation.events)
        with offline_funnel(validation, tuning_model, seed) as funnel:
            config, selection, blend = choose_blend(funnel, validation, page_size, seed)
            ranker, selection["ranker"] = choose_ranker(funnel, validation, config, page_size, blend, seed)
    else:
        config, ranker = FunnelConfig(), None
        selection = {"skipped": f"no user has {split.min_interactions} training positives to carve a validation split "
                                "from: serving defaults kept, no learned ranker"}
    with offline_funnel(split, two_tower, seed, ranker) as funnel:
        fit_s = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        metrics = measure(split, funnel.scorer(config, page_size), k_values=k_values, progress=True, label=NAME)
    return {**metrics, "fit_s": fit_s, "eval_s": round(time.perf_counter() - started, 3), "selection": selection,
            "params": config.model_dump(), "ranker": "learned" if ranker else "blend"}


def ranker_for_serving(split: Split, model: TwoTowerRecommender, seed: int = 0) -> tuple[LearnedRanker | None, dict]:
    """A learned ranker for the version ``kapparec train`` registers, and its record: fitted on the
    candidates the funnel over ``split``'s training part (its replayed features, ``model`` fitted on
    it: the held-out twin) proposes to the held-out users, against the blend ``kapparec serve`` runs
    by default, by ``choose_ranker``'s rule. The held-out split plays validation's part here: the
    registered model's figures are the twin's, measured before."""
    config, page_size = FunnelConfig(), 50
    with offline_funnel(split, model, seed) as funnel:
        blend, _ = measure_per_user(split, funnel.scorer(config, page_size), k_values=(10,))
        return choose_ranker(funnel, split, config, page_size, blend[METRIC], seed)
