"""Training and evaluation benchmarks: ``training_benchmark`` and ``evaluation_benchmark``.

Seconds per two-tower epoch are the mean of a fit's epochs after the first, timed by a Keras
callback: the first pays for building the graph. Its ceiling is numpy doing the same number of
64-d in-batch logits as one epoch: the part of an epoch no framework avoids.

The evaluation runs the project's own protocol (``kapparec eval``) on ml-latest-small when the
folder exists, the synthetic log otherwise; the README's quality goals are stated on
ml-latest-small, so a synthetic run reports figures without judging them.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from kapparec.settings import PROJECT_ROOT

MOVIELENS = PROJECT_ROOT.parent / "shared" / "datasets" / "ml-latest-small"
EVAL_MODELS = ("popularity", "item_knn", "ease", "two_tower", "funnel")
LOGITS_BATCH, EMBEDDING_DIM = 1024, 64


def synthetic_interactions(users: int, items: int, events: int, seed: int = 0):
    """(Interactions, Catalog) of a synthetic log, through the log's own wire format and parser."""
    from streams.schema import encode, parse_catalog, parse_interaction
    from streams.synthetic import SyntheticLog
    from training.data import Catalog, Interactions

    log = SyntheticLog(users=users, items=items, events=events, seed=seed)
    interactions = Interactions.from_events(parse_interaction(encode(e), offset=n) for n, e in enumerate(log.interactions()))
    catalog = Catalog.from_entries(parse_catalog(encode(c), offset=n) for n, c in enumerate(log.catalog()))
    return interactions, catalog


def training_benchmark(interactions: int = 100_000, users: int = 30_000, items: int = 8_000,
                       events: int = 700_000, epochs: int = 3) -> dict:
    """Seconds per two-tower epoch on ``interactions`` distinct user-item pairs, its loss curve,
    and the numpy logits ceiling."""
    from training.data import retrieval_positives
    from training.two_tower.train import TwoTowerParams, TwoTowerRecommender

    events_read, _ = synthetic_interactions(users, items, events)
    positives = retrieval_positives(events_read)
    if len(positives) < interactions:
        raise ValueError(f"the synthetic log yields {len(positives)} distinct interactions, fewer than {interactions}")
    train = positives.take(np.arange(interactions))
    timer = epoch_timer()
    model = TwoTowerRecommender(TwoTowerParams(epochs=epochs), callbacks=[timer])
    model.fit(train, None)
    return {"interactions": interactions, "epochs": epochs,
            "seconds_per_epoch": round(float(np.mean(timer.seconds[1:])), 3), "first_epoch_s": round(timer.seconds[0], 3),
            "logits_only_s": round(logits_only_seconds(interactions), 4),
            "loss_curve": [round(loss, 4) for loss in model.loss_curve]}


def epoch_timer():
    """A Keras callback whose ``seconds`` lists each epoch's wall time."""
    import tensorflow as tf

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._began)

    return EpochTimer()


def logits_only_seconds(rows: int) -> float:
    """numpy computing one epoch's in-batch logits (batches of 1024 x 64-d, float32)."""
    batch = np.random.default_rng(0).standard_normal((LOGITS_BATCH, EMBEDDING_DIM), dtype=np.float32)
    started = time.perf_counter()
    for _ in range(max(rows // LOGITS_BATCH, 1)):
        batch @ batch.T
    return time.perf_counter() - started


def evaluation_benchmark(movielens: Path | None = MOVIELENS, synthetic: tuple[int, int, int] = (2_000, 1_000, 60_000),
                         epochs: int = 3, search_trials: int | None = None, seed: int = 0) -> dict:
    """``kapparec eval`` over every model and baseline: on ``movielens`` when that folder exists,
    else on a synthetic log of (users, items, events). The two-tower's grid is the small one, with
    ``epochs`` fixed and its seeded trials (the grid's own count unless ``search_trials``), so
    the run's length is known in advance."""
    from training.cli import build_models, movielens_folder, split_of
    from training.evaluate import evaluate
    from training.funnel_eval import evaluate_funnel

    if movielens is not None and Path(movielens).is_dir():
        interactions, catalog, _ = movielens_folder(Path(movielens))
        dataset = "ml-latest-small"
    else:
        interactions, catalog = synthetic_interactions(*synthetic, seed=seed)
        dataset = "synthetic {} users, {} items, {} events".format(*synthetic)
    split = split_of(interactions, catalog)
    args = SimpleNamespace(epochs=epochs, seed=seed, search_space="small", search_trials=search_trials)
    models = build_models([name for name in EVAL_MODELS if name != "funnel"], args)
    report = evaluate(split, models, progress=False)
    two_tower = next(model for model in models if model.name == "two_tower")
    report["models"]["funnel"] = evaluate_funnel(split, two_tower.model, seed=seed)
    return {"dataset": dataset, "protocol": report["protocol"],
            "models": {name: {metric: value for metric, value in metrics.items() if not isinstance(value, (dict, list))}
                       for name, metrics in report["models"].items()}}
