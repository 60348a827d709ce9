"""The promotion gate rescores production on the candidate's split: equal terms, and broken artifacts refused."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from modelfiles.registry import ModelRegistry
from modelfiles.two_tower import USER_TOWER_DIR
from streams.synthetic import SyntheticLog
from tests.test_two_tower import PARAMS, synthetic_data
from training.data import retrieval_positives
from training.evaluate import evaluate
from training.gate import decide, rescore
from training.split import chronological_split
from training.two_tower.export import export_two_tower
from training.two_tower.train import TwoTowerRecommender


@pytest.fixture(scope="module")
def split():
    interactions, catalog = synthetic_data(SyntheticLog(users=60, items=150, events=12_000, seed=3))
    positives = retrieval_positives(interactions)
    return chronological_split(positives, min_interactions=10, holdout=5, catalog=catalog, events=interactions)


@pytest.fixture(scope="module")
def trained(split) -> tuple[TwoTowerRecommender, dict]:
    model = TwoTowerRecommender(PARAMS)
    metrics = evaluate(split, [model], progress=False)["models"]["two_tower"]
    return model, metrics


@pytest.fixture
def production(tmp_path, split, trained):
    model, metrics = trained
    registry = ModelRegistry(tmp_path)
    version = registry.register(lambda d: export_two_tower(model, d, split.known_items, split.train.user_ids[:50]),
                                metadata={"model": "two_tower", "metrics": metrics})
    return registry.promote(version.id)


def test_rescoring_production_on_its_own_split_reproduces_its_evaluation(split, trained, production):
    _, metrics = trained
    rescored = rescore(production, split)
    for key in ("recall@10", "ndcg@10", "recall@50"):
        assert rescored[key] == pytest.approx(metrics[key], abs=2e-3), key


def test_a_candidate_worse_on_the_same_split_is_refused(split, trained, production):
    untrained = TwoTowerRecommender(dataclasses.replace(PARAMS, epochs=0))
    worse = evaluate(split, [untrained], progress=False)["models"]["two_tower"]
    decision = decide(worse, production, split, margin=0.02, force=False)
    assert not decision.promote and "fails" in decision.reason
    assert decision.production_metrics["recall@10"] > worse["recall@10"]
    assert decide(trained[1], production, split, margin=0.02, force=False).promote


def test_a_production_model_that_cannot_be_rescored_is_reported_and_refused(split, trained, production):
    shutil.rmtree(production.path / USER_TOWER_DIR)
    decision = decide(trained[1], production, split, margin=0.02, force=False)
    assert not decision.promote
    assert f"production model {production.id} cannot be rescored" in decision.reason and "--force" in decision.reason
    forced = decide(trained[1], production, split, margin=0.02, force=True)
    assert forced.promote and "promoted anyway" in forced.reason
