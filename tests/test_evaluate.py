"""training.evaluate: metric formulas against hand-computed values, exclusion of training items, selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kapparec.errors import KapparecError
from training.data import Catalog, Interactions
from training.evaluate import choose_on_validation, evaluate, measure, top_k
from training.split import Split

ITEMS = ["a", "b", "c", "d", "e"]


class FixedScores:
    """Scores every user alike from a fixed item → score table; counts its fits."""

    name = "fixed"

    def __init__(self, table: dict[str, float]):
        self.table, self.fits = table, 0

    def fit(self, train, catalog, events=None) -> None:
        self.fits += 1

    def score(self, users, items) -> np.ndarray:
        row = np.array([self.table[item] for item in items], dtype=np.float32)
        return np.tile(row, (len(users), 1))


def hand_split() -> Split:
    """u trained on a, held out c and e; w trained on b, held out a and an item outside the universe."""
    train = Interactions.from_columns(["u", "w"], ["a", "b"], [1, 2])
    test = {"u": ["c", "e"], "w": ["a", "gone"]}
    return Split(train=train, test=test, known_items=ITEMS, cutoff_ms=3, min_interactions=2, holdout=2)


def descending() -> FixedScores:
    return FixedScores({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1})


def test_metrics_match_hand_computed_values():
    report = evaluate(hand_split(), [descending()], k_values=(2, 4), progress=False)
    metrics = report["models"]["fixed"]
    # u ranks b, c, d, e (a is u's training item): hits at ranks 2 and 4.
    # w ranks a, c, d, e (b excluded): hit at rank 1; "gone" can never be hit but counts in |test|.
    u_recall2, w_recall2 = 1 / 2, 1 / 2
    u_ndcg2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    w_ndcg2 = 1 / (1 + 1 / math.log2(3))
    u_ndcg4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert metrics["recall@2"] == pytest.approx((u_recall2 + w_recall2) / 2, abs=1e-6)
    assert metrics["ndcg@2"] == pytest.approx((u_ndcg2 + w_ndcg2) / 2, abs=1e-6)
    assert metrics["recall@4"] == pytest.approx((1 + 1 / 2) / 2, abs=1e-6)
    assert metrics["ndcg@4"] == pytest.approx((u_ndcg4 + w_ndcg2) / 2, abs=1e-6)
    assert metrics["coverage"] == pytest.approx(3 / 5)  # top-2s: {b, c} and {a, c}
    assert report["protocol"]["test_users"] == 2 and report["protocol"]["known_items"] == 5


def test_recall_divides_by_k_when_the_test_set_is_larger():
    split = Split(
        train=Interactions.from_columns(["u"], ["e"], [1]),
        test={"u": ["a", "b", "c", "d"]},
        known_items=ITEMS,
        cutoff_ms=2,
    )
    metrics = measure(split, lambda users: descending().score(users, ITEMS), k_values=(2,))
    assert metrics["recall@2"] == 1.0 and metrics["ndcg@2"] == pytest.approx(1.0)


def test_training_items_are_never_recommended_even_with_few_items_left():
    split = Split(
        train=Interactions.from_columns(["u"] * 4, ["a", "b", "c", "d"], [1, 2, 3, 4]),
        test={"u": ["a"]},  # only reachable if training items leaked into the ranking
        known_items=ITEMS,
        cutoff_ms=5,
    )
    metrics = measure(split, lambda users: descending().score(users, ITEMS), k_values=(3,))
    assert metrics["recall@3"] == 0.0 and metrics["coverage"] == pytest.approx(1 / 5)  # only e is rankable


def test_evaluate_fits_unless_told_the_model_is_trained():
    model = descending()
    first = evaluate(hand_split(), [model], progress=False)
    assert model.fits == 1 and first["models"]["fixed"]["fit_s"] is not None
    second = evaluate(hand_split(), [model], progress=False, fit=False)
    assert model.fits == 1 and second["models"]["fixed"]["fit_s"] is None
    assert first["models"]["fixed"]["recall@10"] == second["models"]["fixed"]["recall@10"]


def test_equal_scores_break_towards_the_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 4], [0, 1, 2]]


def test_batching_does_not_change_the_result():
    split = hand_split()
    one = measure(split, lambda users: descending().score(users, ITEMS), batch_users=1)
    all_at_once = measure(split, lambda users: descending().score(users, ITEMS), batch_users=256)
    assert one == all_at_once


def test_bad_scores_and_an_empty_test_set_are_clear_errors():
    split = hand_split()
    with pytest.raises(KapparecError, match="NaN"):
        measure(split, lambda users: np.full((len(users), 5), np.nan))
    with pytest.raises(KapparecError, match="shape"):
        measure(split, lambda users: np.zeros((len(users), 4)))
    with pytest.raises(KapparecError, match="nothing to evaluate"):
        measure(Split(split.train, {}, ITEMS, 3), lambda users: np.zeros((len(users), 5)))


def test_choose_on_validation_holds_out_the_end_of_training_and_picks_the_best():
    # Each user watches i0..i5 in order; validation holds out each user's last two (i4, i5),
    # which stay rankable because the catalog lists them beside ten distractors.
    users = [u for u in ("p", "q", "r") for _ in range(6)]
    items = [f"i{k}" for _ in range(3) for k in range(6)]
    train = Interactions.from_columns(users, items, list(range(18)))
    distractors = [f"d{k}" for k in range(10)]
    catalog = Catalog(item_ids=[f"i{k}" for k in range(6)] + distractors, titles={}, categories={}, created_at={})
    seen: list[dict] = []

    def prepare(split: Split):
        seen.append(split.test)
        known = split.known_items

        def scorer(candidate: str):
            favourite = {"right": {"i4", "i5"}, "wrong": set(distractors)}[candidate]
            return lambda batch: np.tile([float(item in favourite) for item in known], (len(batch), 1))

        return scorer

    best, results = choose_on_validation(train, catalog, ["wrong", "right"], prepare, min_interactions=5, holdout=2)
    assert seen == [{"p": ["i4", "i5"], "q": ["i4", "i5"], "r": ["i4", "i5"]}]
    assert best == "right" and results["right"] == 1.0 and results["wrong"] == 0.0
