"""Fit the two-tower on training interactions: the ``Recommender`` that ``evaluate`` runs like a baseline.

Each training example is one positive interaction with the user tower's inputs as the feature
store held them just before it (point in time, through the store's own definitions: see
``training.tower_inputs``), so the model never learns from the future it is asked to predict and
is trained on exactly what serving reads. With ``per_position`` the same examples come in
chunks of a user's consecutive positives that share their history items (``positions``). At scoring time the query is the user's state at the
cutoff: the latest history and profile, and the hour of the last activity.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from modelfiles.query import HISTORY, HISTORY_AGE, hour_of_day, query_features, strings, timed_rows
from training.data import Catalog, Interactions
from training.tower_inputs import UserLog
from training.two_tower.features import ItemFields, Vocabularies, item_features, positive_features
from training.two_tower.positions import CHUNK_QUERIES, position_examples
from training.two_tower.model import TowerShape, TwoTowerModel, member_key

SCORE_BATCH = 4096


@dataclass(frozen=True)
class TwoTowerParams:
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 3e-3
    temperature: float = 0.1
    history_len: int = 50
    max_categories: int = 4
    seed: int = 0
    shape: TowerShape = TowerShape()
    # Train on chunks of every position of each user's log (``positions``) rather than on
    # single examples in a random order: the same loss terms, batched by user.
    per_position: bool = False
    # Independently initialised two-towers trained side by side and served as one (``model.Members``).
    members: int = 1

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UserState:
    """Each training user's query features at the cutoff.

    The ages of the history are taken at the user's last activity, like the hour: the hold-out
    is each user's next items, which follow that activity rather than the log's end.
    """

    histories: dict[str, list[tuple[str, int]]]
    last_times: dict[str, int]
    regions: dict[str, str]
    devices: dict[str, str]
    hours: dict[str, int]

    @classmethod
    def at_cutoff(cls, log: UserLog, history_len: int) -> "UserState":
        """The state at the end of ``log``: what ``FeatureReader`` would serve for each user."""
        last_times = log.last_event_times()
        profiles = log.profiles()
        users = list(last_times)
        hours = hour_of_day(np.fromiter(last_times.values(), dtype=np.int64, count=len(users))).tolist()
        return cls(
            histories={user: log.timed_tower_history(user, history_len) for user in users},
            last_times=last_times,
            regions={user: profiles[user]["region"] for user in users},
            devices={user: profiles[user]["device"] for user in users},
            hours=dict(zip(users, hours)),
        )

    def features(self, users: Sequence[str], history_len: int) -> dict[str, np.ndarray]:
        """Unknown users get what a brand-new user has: no history, no context."""
        histories, ages = timed_rows([self.histories.get(u, ()) for u in users],
                                     [self.last_times.get(u, 0) for u in users], history_len)
        return query_features(
            np.asarray(users, dtype=object),
            histories,
            ages,
            [self.regions.get(u, "") for u in users],
            [self.devices.get(u, "") for u in users],
            [self.hours.get(u, 0) for u in users],
        )


class EpochProgress(tf.keras.callbacks.Callback):
    """One tqdm bar over epochs on stderr: Keras' own progress prints to stdout, where JSON output goes."""

    def __init__(self, epochs: int):
        super().__init__()
        self.bar = tqdm(total=epochs, desc="fit two_tower", unit="epoch")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.1f}")
        self.bar.update()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


class EpochClock(tf.keras.callbacks.Callback):
    """Wall seconds of each epoch (the search's per-epoch validation included when it runs)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


class TwoTowerRecommender:
    """The two-tower behind the ``Recommender`` protocol (fit/score)."""

    name = "two_tower"

    def __init__(self, params: TwoTowerParams = TwoTowerParams(), progress: bool = False, callbacks: Sequence = ()):
        self.params = params
        self.progress = progress
        self.callbacks = tuple(callbacks)  # Keras callbacks, e.g. the search's per-epoch validation
        self.model: TwoTowerModel | None = None
        self.loss_curve: list[float] = []
        self.epoch_seconds: list[float] = []
        self.item_fields = ItemFields()
        self.users: UserState | None = None
        self._item_cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def fit(self, train: Interactions, catalog: Catalog | None, events: Interactions | None = None) -> None:
        """Fit on the positives ``train``; the tower's inputs come from ``events`` (default: ``train``)."""
        p = self.params
        # Seeds alone are not enough: some CPU kernels reduce in thread order; op determinism
        # makes the same seed and data give bit-identical weights (the reload/audit story).
        tf.keras.utils.set_random_seed(p.seed)
        tf.config.experimental.enable_op_determinism()
        self.item_fields = ItemFields.of(catalog)
        vocab = Vocabularies.build(train.user_ids, train.item_ids, train.regions, train.devices, self.item_fields)
        self.model = TwoTowerModel(vocab, p.shape, p.temperature, p.history_len, p.members)
        self.model.compile(optimizer=tf.keras.optimizers.Adam(p.learning_rate))
        log = UserLog(train if events is None else events)
        self.users = UserState.at_cutoff(log, p.history_len)
        self.forget_item_embeddings()
        self.loss_curve = []
        if p.epochs > 0:
            clock = EpochClock()
            callbacks = [clock] + ([EpochProgress(p.epochs)] if self.progress else []) + list(self.callbacks)
            history = self.model.fit(self._dataset(train, log), epochs=p.epochs, verbose=0, callbacks=callbacks)
            self.loss_curve = [float(v) for v in history.history["loss"]]
            self.epoch_seconds = clock.seconds
        else:  # an untrained model still needs its weights built to score and export
            self.embed_queries(self.users.features(train.user_ids[:1].tolist(), p.history_len))
            self.embed_items(train.item_ids[:1].tolist())

    def _dataset(self, train: Interactions, log: UserLog) -> tf.data.Dataset:
        p = self.params
        if p.per_position:
            examples = position_examples(train, log, p.history_len, self.item_fields, p.max_categories)
            batch = max(1, p.batch_size // CHUNK_QUERIES)
        else:
            times = train.event_times.tolist()
            histories, ages = timed_rows(log.timed_tower_histories(train.user_ids.tolist(), times, p.history_len), times, p.history_len)
            examples = positive_features(train, self.item_fields, p.max_categories) | {HISTORY: strings(histories), HISTORY_AGE: ages}
            batch = p.batch_size
        rows = len(next(iter(examples.values())))
        dataset = tf.data.Dataset.from_tensor_slices(examples)
        # Every member reads its own shuffle of the same examples (``model.member_key``).
        shuffles = {member_key(n): dataset.shuffle(rows, seed=p.seed + n, reshuffle_each_iteration=True)
                    for n in range(p.members)}
        return tf.data.Dataset.zip(shuffles).batch(batch).prefetch(tf.data.AUTOTUNE)

    def embed_queries(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._batched(self._fitted().user_tower, features)

    def forget_item_embeddings(self) -> None:
        """Drop the cached item embeddings: the weights moved (e.g. another epoch was trained)."""
        self._item_cache = None

    def embed_items(self, items: Sequence[str]) -> np.ndarray:
        key = tuple(items)
        if self._item_cache is None or self._item_cache[0] != key:
            features = item_features(items, self.item_fields, self.params.max_categories)
            self._item_cache = (key, self._batched(self._fitted().item_tower, features))
        return self._item_cache[1]

    def user_features(self, users: Sequence[str]) -> dict[str, np.ndarray]:
        if self.users is None:
            raise RuntimeError("fit the two-tower before scoring")
        return self.users.features(users, self.params.history_len)

    def score(self, users: Sequence[str], items: Sequence[str], members: int | None = None) -> np.ndarray:
        """Dot products of the users' and items' embeddings; with ``members``, of the first ``members``
        members' parts alone: what a model of only those members would score (``model.Members``)."""
        width = None if members is None else members * self.params.shape.output_dim
        queries = self.embed_queries(self.user_features(users))[:, :width]
        return (queries @ self.embed_items(items)[:, :width].T).astype(np.float32)

    def _fitted(self) -> TwoTowerModel:
        if self.model is None:
            raise RuntimeError("fit the two-tower before scoring")
        return self.model

    @staticmethod
    def _batched(tower: tf.keras.Model, features: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(features.values())))
        chunks = [
            tower({name: values[start : start + SCORE_BATCH] for name, values in features.items()}).numpy()
            for start in range(0, rows, SCORE_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def save_training_curve(loss_curve: Sequence[float], path: Path) -> Path:
    """Loss per epoch as a PNG next to the model."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(loss_curve) + 1), loss_curve, marker="o")
    ax.set(xlabel="epoch", ylabel="training loss (in-batch softmax, logQ-corrected)", title="two-tower training curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
