"""Training benchmarks (`pytest -m bench -s`): seconds per two-tower epoch beside the numpy logits
ceiling, and the evaluation protocol for every model (on ml-latest-small when ../shared holds it; the
suite never needs it)."""

from __future__ import annotations

import json

import pytest

from training.train_bench import evaluation_benchmark, training_benchmark

pytestmark = pytest.mark.bench


def test_two_tower_seconds_per_epoch_on_100k_interactions():
    result = training_benchmark(interactions=100_000)
    print("\ntraining:", json.dumps(result))
    # numpy's logits are a part of an epoch's work: an epoch cannot take less.
    assert result["seconds_per_epoch"] >= result["logits_only_s"] > 0
    curve = result["loss_curve"]
    assert len(curve) == result["epochs"] and curve[-1] < curve[0]  # the model learned


def test_eval_protocol_for_every_model():
    result = evaluation_benchmark()
    print(f"\neval on {result['dataset']}:", json.dumps(result["models"], sort_keys=True))
    assert set(result["models"]) == {"popularity", "item_knn", "ease", "two_tower", "funnel"}
    for name, metrics in result["models"].items():
        # Recall can only grow with the page's length, within [0, 1].
        assert 0.0 <= metrics["recall@10"] <= metrics["recall@50"] <= 1.0, name
    # Every personal model finds more held-out items than the same count of the most popular ones.
    assert all(result["models"][name]["recall@10"] > result["models"]["popularity"]["recall@10"]
               for name in ("ease", "two_tower", "funnel"))
