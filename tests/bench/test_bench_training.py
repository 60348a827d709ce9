"""Training benchmarks (`pytest -m bench -s`): seconds per two-tower epoch, and the evaluation
protocol on ml-latest-small for every model (when ../shared holds it; the suite never needs it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kapparec.settings import PROJECT_ROOT

pytestmark = pytest.mark.bench

MOVIELENS = PROJECT_ROOT.parent / "shared" / "datasets" / "ml-latest-small"


def test_two_tower_seconds_per_epoch_on_100k_interactions():
    from streams.schema import encode, parse_interaction
    from streams.synthetic import SyntheticLog
    from training.data import Interactions, retrieval_positives
    from training.two_tower.train import TwoTowerParams, TwoTowerRecommender

    log = SyntheticLog(users=30_000, items=8_000, events=700_000, seed=0)
    events = Interactions.from_events(parse_interaction(encode(e), offset=n) for n, e in enumerate(log.interactions()))
    positives = retrieval_positives(events)
    assert len(positives) >= 100_000, "the synthetic log must yield 100k distinct user-item interactions"
    train = positives.take(np.arange(100_000))
    epoch_seconds = []
    for epochs in (1, 3):  # the difference removes graph building and the first-epoch warm-up
        started = time.perf_counter()
        TwoTowerRecommender(TwoTowerParams(epochs=epochs)).fit(train, None)
        epoch_seconds.append(time.perf_counter() - started)
    per_epoch = (epoch_seconds[1] - epoch_seconds[0]) / 2
    # Ceiling: the same number of 64-d dot products as one epoch's in-batch logits, in numpy.
    batch, rows = 1024, len(train)
    a = np.random.default_rng(0).standard_normal((batch, 64), dtype=np.float32)
    started = time.perf_counter()
    for _ in range(max(rows // batch, 1)):
        a @ a.T
    logits_s = time.perf_counter() - started
    print("\ntraining:", json.dumps({"interactions": rows, "seconds_per_epoch": round(per_epoch, 2),
                                     "first_epoch_s": round(epoch_seconds[0], 2), "logits_only_s": round(logits_s, 3)}))
    assert per_epoch > 0


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason=f"no MovieLens at {MOVIELENS}")
def test_eval_protocol_on_movielens_for_every_model():
    from training.cli import build_models, movielens_folder, split_of
    from training.evaluate import evaluate

    interactions, catalog, _ = movielens_folder(Path(MOVIELENS))
    args = type("Args", (), {"epochs": None, "seed": 0})()
    result = evaluate(split_of(interactions, catalog), build_models(["popularity", "item_knn", "ease", "two_tower"], args))
    print("\neval:", json.dumps(result["models"], sort_keys=True))
    assert set(result["models"]) == {"popularity", "item_knn", "ease", "two_tower"}
