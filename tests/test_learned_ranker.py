"""The funnel's learned ranker: its request-time features, its fit, its file, and that only validation data trains it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from featurestore.reader import HistoryEntry, UserFeatures
from kapparec.timeunits import DAY_MS
from modelfiles.ranker import RANKER_FILE, LearnedRanker, RankerFileError
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.ranker import COLUMN, FEATURES, candidate_features, for_request, load_ranker
from serving.ranking import ranking
from serving.request import SOURCES, Candidate, Pool
from serving.snapshot import Snapshot
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from tests.test_two_tower import PARAMS
from training.cli import split_of
from training.evaluate import measure_per_user
from training.funnel_eval import START, config_of, offline_funnel
from training.learned_ranker import METRIC, candidate_recall, choose_ranker, collect_examples, fit
from training.replay import replay_log
from training.split import chronological_split
from training.two_tower.train import TwoTowerRecommender

NOW = 100 * DAY_MS
CATALOG = {"a": {"categories": ["drama"], "created_at": NOW - 3 * DAY_MS},
           "b": {"categories": ["comedy"], "created_at": NOW},
           "c": {"categories": ["drama", "comedy"], "created_at": NOW - DAY_MS},
           "h1": {"categories": ["drama"]}, "h2": {"categories": ["drama"]}, "h3": {"categories": ["comedy"]}}


def a_user() -> UserFeatures:
    history = [HistoryEntry(item, "view", NOW - n) for n, item in enumerate(("h1", "h2", "h3"))]
    return UserFeatures(history, {"region": "", "device": ""}, {"h1", "h2", "h3"}, set(), [])


def a_snapshot() -> Snapshot:
    return Snapshot("v", NOW, CATALOG, {}, {"global": [("a", 99.0), ("c", 9.0)]}, [])


def test_the_features_are_what_serving_knows_about_each_candidate():
    pool = [Candidate("a", "two_tower", 0, score=3.0), Candidate("b", "two_tower", 1, score=1.0),
            Candidate("a", "co_occurrence", 2, because="h1"), Candidate("a", "co_occurrence", 5, because="h2"),
            Candidate("c", "popular", 1)]
    features = candidate_features(pool, a_user(), a_snapshot(), "")
    assert features.items == ["a", "b", "c"]
    a, b, c = features.matrix
    assert a[COLUMN["in.two_tower"]] == a[COLUMN["in.co_occurrence"]] == 1 and a[COLUMN["sources"]] == 2
    assert (a[COLUMN["co_occurrence.proposals"]], b[COLUMN["co_occurrence.proposals"]]) == (2, 0)
    assert a[COLUMN["rr.co_occurrence"]] == pytest.approx(1 / 3) and c[COLUMN["rr.popular"]] == pytest.approx(1 / 2)
    assert (a[COLUMN["two_tower.score_z"]], b[COLUMN["two_tower.score_z"]]) == (1.0, -1.0)
    assert b[COLUMN["two_tower.log_rank"]] == pytest.approx(np.log(2)) and c[COLUMN["in.two_tower"]] == 0
    assert a[COLUMN["popularity"]] == 1.0 and c[COLUMN["popularity"]] == pytest.approx(np.log(10) / np.log(100))
    assert b[COLUMN["popularity"]] == 0 and b[COLUMN["age.log_days"]] == 0
    assert a[COLUMN["age.log_days"]] == pytest.approx(np.log(4))
    # Two of the three history items are dramas, one a comedy; "c" is both: its best share counts.
    assert (a[COLUMN["category_affinity"]], b[COLUMN["category_affinity"]], c[COLUMN["category_affinity"]]) == \
        pytest.approx((2 / 3, 1 / 3, 2 / 3))
    assert a[COLUMN["rr.two_tower.x_history"]] == pytest.approx(np.log(4))


def test_ranking_orders_by_the_learned_scores_and_names_the_source_that_adds_most():
    coef = np.zeros(len(FEATURES))
    coef[COLUMN["popularity"]], coef[COLUMN["rr.co_occurrence"]] = 1.0, 0.5
    ranker = LearnedRanker(FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), coef)
    candidates = [Candidate("b", "two_tower", 0, score=3.0), Candidate("a", "two_tower", 1, score=1.0),
                  Candidate("a", "co_occurrence", 0, because="h1"), Candidate("c", "popular", 0)]
    catalog = CatalogArrays.of(CATALOG)
    pool = Pool.of_candidates(candidates, catalog.rows([c.item_id for c in candidates]))

    ranked = ranking(pool, catalog, FunnelConfig(), learned=for_request(ranker, a_user(), a_snapshot(), ""))
    assert [catalog.ids[row] for row in ranked.rows] == ["a", "c", "b"]
    assert (SOURCES[ranked.sources[0]], ranked.reason(0)) == ("co_occurrence", "h1")
    # The blend, over the same candidates, ranks otherwise: the learned scores made the order.
    assert [catalog.ids[row] for row in ranking(pool, catalog, FunnelConfig()).rows] != ["a", "c", "b"]


def test_the_fit_weighs_the_feature_that_predicts_and_its_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4_000, len(FEATURES)))
    # Each of 40 users' labels follow one feature; another moves whole users, which a listwise fit ignores.
    features[:, COLUMN["popularity"]] = np.repeat(rng.normal(size=40), 100)
    chance = 1 / (1 + np.exp(-3 * features[:, COLUMN["rr.two_tower"]] - 2 * features[:, COLUMN["popularity"]] + 3))
    labels = rng.random(4_000) < chance
    per_user = (np.split(features, 40), np.split(labels, 40))
    ranker = fit(FEATURES, *per_user, l2=1.0)
    strongest = np.argsort(-np.abs(ranker.coef))
    assert strongest[0] == COLUMN["rr.two_tower"] and ranker.coef[strongest[0]] > 5 * abs(ranker.coef[strongest[1]])
    assert fit(FEATURES, *per_user, l2=1e6).coef[COLUMN["rr.two_tower"]] < 0.1 * ranker.coef[COLUMN["rr.two_tower"]]

    path = tmp_path / RANKER_FILE
    dataclasses.replace(ranker, record={"l2": 1.0}).save(path)
    loaded = load_ranker(path)
    assert np.array_equal(loaded.scores(features), ranker.scores(features)) and loaded.record == {"l2": 1.0}
    path.write_text(path.read_text().replace('"sources"', '"something else"'))
    with pytest.raises(RankerFileError, match="other features"):
        load_ranker(path)


def test_the_ranker_is_fitted_and_chosen_on_the_validation_split_alone(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=60, items=120, events=20_000, seed=5))
    interactions, catalog, _ = replay_log(stack.bootstrap)
    split = split_of(interactions, catalog)
    validation = chronological_split(split.train, split.min_interactions, split.holdout, catalog, events=split.events)
    model = TwoTowerRecommender(dataclasses.replace(PARAMS, epochs=3))
    model.fit(validation.train, catalog, events=validation.events)
    config = config_of(START)  # the two-tower's candidates alone
    with offline_funnel(validation, model, seed=0) as funnel:
        blend, _ = measure_per_user(validation, funnel.scorer(config, 50), k_values=(10,))
        examples = collect_examples(funnel, validation, config)
        # What the funnel reads of each user ends before their first validation held-out positive
        # (so before anything of the test split too), and nothing they have seen is an example.
        for user, items in zip(examples.users, examples.items):
            stored = funnel.reader.user_features(user)
            first_held_out = split.train.event_times[split.train.user_ids == user][-split.holdout]
            assert max(e.event_time for e in stored.history) < first_held_out
            assert not set(items) & (stored.seen | stored.disliked)
        # Its page excludes every training item, which the protocol strikes from the ranking: the page's
        # slots are not spent on items the store does not hold as seen.
        serving = funnel.funnel(config)
        for user in examples.users:
            struck = set(validation.train.item_ids[validation.train.user_ids == user].tolist())
            query = funnel.query(user, 50)
            assert set(query.filters.exclude_item_ids) == struck
            assert not {item.item_id for item in serving.recommend(query).items} & struck
        ranker, record = choose_ranker(funnel, validation, config, 50, blend[METRIC], seed=0)
    assert examples.users == sorted(validation.test)
    positives = 0
    for user, items, labels in zip(examples.users, examples.items, examples.labels):
        assert {item for item, label in zip(items, labels) if label} == set(items) & set(validation.test[user])
        positives += int(labels.sum())
    assert positives > 0 and record["positives"] == positives and record["validation_users"] == len(validation.test)
    # Every source was generated for the examples although the configuration weights the two-tower alone.
    assert {source for source in SOURCES if any(examples.features[n][:, COLUMN[f"in.{source}"]].any()
                                                 for n in range(len(examples.users)))} > {"two_tower"}
    figures = record[f"validation_{METRIC}"]
    assert figures["blend"] == pytest.approx(blend[METRIC].mean(), abs=1e-6)
    assert [trial["l2"] for trial in record["trials"]] and record["l2"] in [trial["l2"] for trial in record["trials"]]
    adopted = figures["learned_out_of_fold"] - figures["blend"] > figures["paired_se"]
    assert record["adopted"] == adopted == (ranker is not None)
    if ranker is not None:
        assert ranker.record is record and candidate_recall(ranker, examples, np.arange(len(examples.users))).mean() > 0
