"""training.baselines: each beats random on planted structure; EASE's λ search and its algebra."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines import BASELINES, EASE, ItemKNN, Popularity
from training.baselines.ease import ease_weights, validation_scorers
from training.data import Catalog, Interactions
from training.evaluate import evaluate, measure
from training.recommender import Recommender, UserItemMatrix
from training.split import chronological_split

CLUSTERS, ITEMS_PER_CLUSTER, USERS_PER_CLUSTER, PER_USER = 4, 60, 25, 32


class RandomScores:
    """The floor every baseline must clear: seeded uniform scores."""

    name = "random"

    def fit(self, train, catalog, events=None) -> None:
        self._rng = np.random.default_rng(0)

    def score(self, users, items) -> np.ndarray:
        return self._rng.random((len(users), len(items)), dtype=np.float32)


def planted_log(seed: int = 3) -> tuple[Interactions, Catalog]:
    """Users of a cluster mostly take their cluster's items, the popular ones (Zipf) more often."""
    rng = np.random.default_rng(seed)
    items = [f"c{c}-i{i}" for c in range(CLUSTERS) for i in range(ITEMS_PER_CLUSTER)]
    popularity = np.arange(1, ITEMS_PER_CLUSTER + 1) ** -1.2
    users, taken, times = [], [], []
    for cluster in range(CLUSTERS):
        own = np.arange(cluster * ITEMS_PER_CLUSTER, (cluster + 1) * ITEMS_PER_CLUSTER)
        for u in range(USERS_PER_CLUSTER):
            picks = rng.choice(own, PER_USER - 2, replace=False, p=popularity / popularity.sum())
            noise = rng.choice(np.setdiff1d(np.arange(len(items)), own), 2, replace=False)
            chosen = rng.permutation(np.r_[picks, noise])
            users += [f"u{cluster}-{u}"] * PER_USER
            taken += [items[i] for i in chosen]
            times += sorted(rng.integers(0, 10_000, PER_USER).tolist())
    catalog = Catalog(item_ids=items, titles={}, categories={}, created_at={})
    return Interactions.from_columns(users, taken, times), catalog


@pytest.fixture(scope="module")
def planted_report() -> dict:
    interactions, catalog = planted_log()
    split = chronological_split(interactions, catalog=catalog)
    models = [RandomScores(), *(factory() for factory in BASELINES.values())]
    return evaluate(split, models, progress=False)["models"]


def test_every_baseline_is_a_recommender():
    assert all(isinstance(factory(), Recommender) for factory in BASELINES.values())
    assert set(BASELINES) == {"popularity", "item_knn", "ease"}


def test_popularity_beats_random(planted_report):
    assert planted_report["popularity"]["recall@10"] > 1.5 * planted_report["random"]["recall@10"]


@pytest.mark.parametrize("name", ["item_knn", "ease"])
def test_item_models_find_the_clusters(planted_report, name):
    """Within-cluster co-occurrence is the planted signal popularity cannot see."""
    assert planted_report[name]["recall@10"] > 2 * planted_report["random"]["recall@10"]
    assert planted_report[name]["recall@10"] > planted_report["popularity"]["recall@10"]
    assert planted_report[name]["ndcg@10"] > planted_report["popularity"]["ndcg@10"]


def test_popularity_ranks_by_training_counts():
    model = Popularity()
    model.fit(Interactions.from_columns(["u", "v", "w", "u"], ["a", "a", "a", "b"], [1, 2, 3, 4]), None)
    assert model.score(["anyone", "u"], ["b", "a", "never"]).tolist() == [[1, 3, 0], [1, 3, 0]]


def test_item_knn_scores_neighbours_of_the_users_items():
    # a and b always go together, c never with them.
    train = Interactions.from_columns(["u", "u", "v", "v", "w"], ["a", "b", "a", "b", "c"], [1, 2, 3, 4, 5])
    model = ItemKNN(neighbours=[None])
    model.fit(train, None)
    scores = model.score(["x-has-nothing", "u"], ["a", "b", "c", "new"])
    assert scores[0].tolist() == [0, 0, 0, 0]  # unseen user: nothing to go on
    assert scores[1, 2] == 0 and scores[1, 3] == 0  # no co-occurrence with c; new item unknown
    assert scores[1, 0] == pytest.approx(1.0) and scores[1, 1] == pytest.approx(1.0)  # cos(a, b) = 1


def test_ease_shortcut_over_lambdas_equals_the_closed_form():
    interactions, catalog = planted_log()
    split = chronological_split(interactions, catalog=catalog)
    matrix = UserItemMatrix(split.train)
    users = sorted(split.test)
    scorer_for = validation_scorers(split)
    for l2 in (5.0, 80.0):
        direct = matrix.to_items(matrix.rows(users, dtype=np.float64) @ ease_weights(matrix.gram(), l2), split.known_items)
        assert np.allclose(scorer_for(l2)(users), direct, atol=1e-4)


def test_ease_weights_have_a_zero_diagonal_and_unknown_items_score_zero():
    gram = np.array([[3.0, 2.0], [2.0, 4.0]])
    weights = ease_weights(gram, 1.0)
    inverse = np.linalg.inv(gram + np.eye(2))
    assert np.diag(weights).tolist() == [0.0, 0.0]
    assert weights[0, 1] == pytest.approx(-inverse[0, 1] / inverse[1, 1])
    model = EASE(lambdas=[1.0])
    model.fit(Interactions.from_columns(["u", "u", "v"], ["a", "b", "a"], [1, 2, 3]), None)
    assert model.score(["u"], ["never-seen"]).tolist() == [[0.0]]


def test_ease_chooses_lambda_on_validation_and_refits_on_all_training():
    interactions, catalog = planted_log()
    split = chronological_split(interactions, catalog=catalog)
    candidates = (1e-3, 30.0, 1e5)
    model = EASE(lambdas=candidates)
    model.fit(split.train, catalog)
    assert set(model.validation) == set(candidates)
    assert model.l2 == max(candidates, key=model.validation.get)
    # Refit on everything: the chosen λ scores the real test at least as well as the worst candidate.
    chosen = measure(split, lambda users: model.score(users, split.known_items))["recall@10"]
    worst = min(candidates, key=model.validation.get)
    rival = EASE(lambdas=[worst])
    rival.fit(split.train, catalog)
    assert chosen >= measure(split, lambda users: rival.score(users, split.known_items))["recall@10"]
