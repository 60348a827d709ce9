"""Choosing the two-tower's hyperparameters on validation data only.

The validation split is carved from the training part exactly as the test split is carved
from the log (each eligible user's last ``holdout`` training positives), so the test set is
never looked at. The search is a seeded sample of a small grid, a fixed number of trials (not a
time budget, so a busy machine chooses what an idle one would): the first trial is always the
default configuration, so a search can only improve on validation.
Every trial trains for up to ``max_epochs`` and is measured on validation after every epoch
(training for e epochs of a longer run gives the same weights as an e-epoch run with the same
seed), which chooses the epoch count for free; a trial stops early once validation stops
improving for ``patience`` epochs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

from tqdm import tqdm

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from training.data import Catalog, Interactions
from training.evaluate import measure
from training.split import Split, chronological_split
from training.two_tower.space import SearchSpace
from training.two_tower.train import TwoTowerParams, TwoTowerRecommender

METRIC = "recall@10"


class ValidationCurve(tf.keras.callbacks.Callback):
    """Measures the model on the validation split after every epoch, as the ensemble of its first
    ``members`` members for each count given (default: all of them); stops once the best of those
    stops improving."""

    def __init__(self, model: TwoTowerRecommender, split: Split, patience: int, members: Sequence[int] = ()):
        super().__init__()
        self.recommender, self.split, self.patience = model, split, patience
        self.curves: dict[int, list[float]] = {count: [] for count in members or (model.params.members,)}

    @property
    def scores(self) -> list[float]:
        """The curve of the whole model."""
        return self.curves[max(self.curves)]

    def best(self) -> tuple[int, int]:
        """The member count and the number of epochs with the best score (fewer members first on a tie)."""
        return max(((count, epoch + 1) for count, curve in self.curves.items() for epoch in range(len(curve))),
                   key=lambda cell: (self.curves[cell[0]][cell[1] - 1], -cell[0], -cell[1]))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.recommender.forget_item_embeddings()
        for count, curve in self.curves.items():
            curve.append(measure(self.split, lambda users: self._score(users, count), k_values=(10,))[METRIC])
        _, best_epochs = self.best()
        if epoch + 1 - best_epochs >= self.patience:
            self.model.stop_training = True

    def _score(self, users: list[str], members: int):
        return self.recommender.score(users, self.split.known_items, members)


# The trial parameters a search record lists, as (column, value of the params).
TRIAL_PARAMETERS = {
    "encoder": lambda p: p.shape.encoder,
    "embedding_dim": lambda p: p.shape.embedding_dim,
    "dropout": lambda p: p.shape.dropout,
    "history_len": lambda p: p.history_len,
    "temperature": lambda p: p.temperature,
    "learning_rate": lambda p: p.learning_rate,
    "catalog_fields": lambda p: p.shape.catalog_fields,
    "per_position": lambda p: p.per_position,
}


def _trial_summary(params: TwoTowerParams, scores: list[float], epoch_seconds: list[float], seconds: float) -> dict:
    best = max(range(len(scores)), key=scores.__getitem__)
    return {
        **{name: value(params) for name, value in TRIAL_PARAMETERS.items()},
        f"validation_{METRIC}_by_epoch": [round(s, 6) for s in scores],
        "best_epochs": best + 1,
        f"validation_{METRIC}": round(scores[best], 6),
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 1),
    }


def search(
    train: Interactions,
    catalog: Catalog | None,
    events: Interactions | None,
    space: SearchSpace,
    base: TwoTowerParams,
    trials: int | None = None,
    min_interactions: int = 20,
    holdout: int = 10,
) -> tuple[TwoTowerParams, dict]:
    """The configuration (epochs included) with the best validation ``METRIC``, and the search's record
    (every trial's score, wall and process CPU seconds, the load average the machine had)."""
    validation = chronological_split(train, min_interactions, holdout, catalog, events=events)
    if not validation.test:
        reason = f"no user has {min_interactions} training positives to carve a validation split from: defaults kept"
        return base, {"space": space.name, "skipped": reason}
    started, cpu_started, load_before = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    configurations = space.configurations(dataclasses.replace(base, epochs=space.max_epochs), base.seed, trials)
    summaries: list[dict] = []
    for params in tqdm(configurations, desc="search two_tower", unit="trial"):
        trial_started = time.perf_counter()
        model = TwoTowerRecommender(params)
        curve = ValidationCurve(model, validation, space.patience)
        model.callbacks = (curve,)
        model.fit(validation.train, catalog, events=validation.events)
        summaries.append(_trial_summary(params, curve.scores, model.epoch_seconds, time.perf_counter() - trial_started))
    best = max(range(len(summaries)), key=lambda n: summaries[n][f"validation_{METRIC}"])
    chosen, members = choose_members(validation, catalog, configurations[best], space)
    record = {
        "space": space.name,
        "metric": f"validation {METRIC}",
        "validation_users": len(validation.test),
        "seed": base.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "trials_run": len(summaries),
        "grid_size": len(space.grid(base)),
        "trials": summaries,
        "members": members,
        "chosen": {**{name: summaries[best][name] for name in TRIAL_PARAMETERS}, "members": chosen.members,
                   "epochs": chosen.epochs},
    }
    return chosen, record


def choose_members(validation: Split, catalog: Catalog | None, params: TwoTowerParams,
                   space: SearchSpace) -> tuple[TwoTowerParams, dict]:
    """How many members the chosen configuration keeps, and its epochs: one fit with the most members
    the space allows its encoder, measured after every epoch as the ensemble of its first n members
    for every n the space allows it."""
    started = time.perf_counter()
    counts = space.members_for(params.shape.encoder)
    model = TwoTowerRecommender(dataclasses.replace(params, members=max(counts), epochs=space.max_epochs))
    curve = ValidationCurve(model, validation, space.patience, counts)
    model.callbacks = (curve,)
    model.fit(validation.train, catalog, events=validation.events)
    members, epochs = curve.best()
    record = {
        f"validation_{METRIC}_by_epoch": {count: [round(s, 6) for s in scores] for count, scores in curve.curves.items()},
        "chosen": {"members": members, "epochs": epochs},
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": round(sum(model.epoch_seconds) / max(len(model.epoch_seconds), 1), 1),
    }
    return dataclasses.replace(params, members=members, epochs=epochs), record


class SelectedTwoTower:
    """The two-tower whose every hyperparameter is chosen on validation inside ``fit``.

    ``fit`` searches on a validation split carved from the positives it is given, then fits the
    chosen configuration on all of them, so ``evaluate`` measures the test split exactly once,
    for the chosen configuration. With ``epochs`` fixed (e.g. 0 for an untrained model) the
    search keeps that count instead of choosing it.
    """

    name = "two_tower"

    def __init__(self, base: TwoTowerParams, space: SearchSpace, trials: int | None = None, fixed_epochs: int | None = None):
        self.base, self.space, self.trials = base, space, trials
        self.fixed_epochs = fixed_epochs
        self.selection: dict = {}
        self.model: TwoTowerRecommender | None = None

    @property
    def params(self) -> TwoTowerParams:
        return self._fitted().params

    def fit(self, train: Interactions, catalog: Catalog | None, events: Interactions | None = None) -> None:
        if self.fixed_epochs == 0:
            chosen, self.selection = dataclasses.replace(self.base, epochs=0), {"skipped": "an untrained model (epochs 0)"}
        else:
            space = self.space if self.fixed_epochs is None else dataclasses.replace(
                self.space, max_epochs=self.fixed_epochs, patience=self.fixed_epochs)
            chosen, self.selection = search(train, catalog, events, space, self.base, self.trials)
            if self.fixed_epochs is not None:
                chosen = dataclasses.replace(chosen, epochs=self.fixed_epochs)
        self.model = TwoTowerRecommender(chosen, progress=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        self.model.fit(train, catalog, events=events)
        self.selection["final_fit"] = {
            "epochs": chosen.epochs,
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "seconds_per_epoch": [round(s, 1) for s in self.model.epoch_seconds],
            "load_average": round(os.getloadavg()[0], 2),
        }

    def score(self, users, items):
        return self._fitted().score(users, items)

    def _fitted(self) -> TwoTowerRecommender:
        if self.model is None:
            raise RuntimeError("fit the two-tower before scoring")
        return self.model
