"""The two-tower on a small synthetic log with planted taste clusters: quality, export, OOV, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import training  # noqa: F401 - legacy Keras before TensorFlow loads
from modelfiles.index import load_index
from modelfiles.numpy_tower import NumpyUserTower
from modelfiles.query import AGE_BUCKETS, ATTENTION, ENCODERS, MEAN, RECENCY, pad_rows, query_features
from modelfiles.two_tower import ExportedTwoTower
from streams.schema import encode, parse_catalog, parse_interaction
from streams.synthetic import SyntheticLog
from training.baselines.popularity import Popularity
from training.data import Catalog, Interactions, retrieval_positives
from training.evaluate import evaluate
from training.recommender import Recommender
from training.split import chronological_split
from training.two_tower.export import export_two_tower
from training.two_tower.features import (
    UNKNOWN_YEAR,
    YEAR_BUCKETS,
    ItemFields,
    Vocabularies,
    item_features,
    release_year_buckets,
    title_tokens,
)
from training.two_tower.model import TowerShape
from training.two_tower.train import TwoTowerParams, TwoTowerRecommender, save_training_curve

# Small enough to fit in a few seconds on a shared CPU, big enough for the clusters to show.
PARAMS = TwoTowerParams(
    epochs=12,
    batch_size=256,
    learning_rate=1e-2,
    temperature=0.1,
    history_len=10,
    seed=7,
    shape=TowerShape(embedding_dim=16, output_dim=16, hidden_dim=32, oov_buckets=4, context_dim=4),
)


def synthetic_data(log: SyntheticLog) -> tuple[Interactions, Catalog]:
    interactions = Interactions.from_events(
        parse_interaction(encode(event), offset=offset) for offset, event in enumerate(log.interactions())
    )
    catalog = Catalog.from_entries(parse_catalog(encode(item), offset=offset) for offset, item in enumerate(log.catalog()))
    return interactions, catalog


@pytest.fixture(scope="module")
def split():
    interactions, catalog = synthetic_data(SyntheticLog(users=60, items=150, events=12_000, seed=3))
    # Activity is heavy-tailed: a shorter holdout keeps most of the 60 users in the test set.
    return chronological_split(retrieval_positives(interactions), min_interactions=10, holdout=5, catalog=catalog)


@pytest.fixture(scope="module")
def fitted(split) -> TwoTowerRecommender:
    model = TwoTowerRecommender(PARAMS)
    model.fit(split.train, split.catalog)
    return model


def test_the_split_has_enough_test_users(split):
    assert len(split.test) >= 30


def test_two_tower_beats_popularity_on_planted_clusters(split, fitted):
    popularity = evaluate(split, [Popularity()], progress=False)["models"]["popularity"]
    two_tower = evaluate(split, [fitted], progress=False, fit=False)["models"]["two_tower"]
    assert two_tower["recall@10"] > popularity["recall@10"] * 1.2, (two_tower, popularity)


def test_training_on_every_position_learns_the_planted_clusters(split):
    """Chunks of every position train the attention tower to beat popularity, its loss falling."""
    params = dataclasses.replace(PARAMS, per_position=True, shape=dataclasses.replace(PARAMS.shape, encoder=ATTENTION))
    model = TwoTowerRecommender(params)
    model.fit(split.train, split.catalog)
    assert model.loss_curve[-1] < model.loss_curve[0]
    popularity = evaluate(split, [Popularity()], progress=False)["models"]["popularity"]
    per_position = evaluate(split, [model], progress=False, fit=False)["models"]["two_tower"]
    assert per_position["recall@10"] > popularity["recall@10"] * 1.2, (per_position, popularity)


def test_training_loss_falls_and_the_curve_is_drawn(fitted, tmp_path):
    assert len(fitted.loss_curve) == PARAMS.epochs
    assert fitted.loss_curve[-1] < fitted.loss_curve[0]
    png = save_training_curve(fitted.loss_curve, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_have_the_protocol_shape_and_type(split, fitted):
    assert isinstance(fitted, Recommender)
    users = sorted(split.test)[:5]
    scores = fitted.score(users, split.known_items)
    assert scores.shape == (5, len(split.known_items)) and scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.fixture(scope="module")
def exported(split, fitted, tmp_path_factory):
    directory = tmp_path_factory.mktemp("two_tower")
    meta = export_two_tower(fitted, directory, split.known_items, query_users=sorted(split.test))
    return directory, meta


def test_export_reloads_to_identical_scores(split, fitted, exported):
    directory, meta = exported
    users = sorted(split.test)
    reloaded = ExportedTwoTower(directory)
    features = fitted.user_features(users)
    np.testing.assert_allclose(reloaded.score(features), fitted.score(users, split.known_items), rtol=0, atol=1e-6)
    assert list(reloaded.item_ids) == list(split.known_items)
    # A small catalog is searched exactly, so ScaNN agrees with brute force completely.
    assert meta["index"]["scann_recall@10_vs_exact"] == 1.0
    assert json.loads((directory / "two_tower.json").read_text())["history_len"] == PARAMS.history_len
    ids, _ = load_index(directory / "index").search(reloaded.embed_queries(features), 10)
    best = np.argsort(-reloaded.score(features), axis=1, kind="stable")[:, :10]
    assert [set(row) for row in ids] == [set(reloaded.item_ids[row]) for row in best]


def test_exported_tower_accepts_a_shorter_history(split, fitted, exported):
    features = fitted.user_features(sorted(split.test)[:3])
    features["history"] = features["history"][:, :3]
    embeddings = ExportedTwoTower(exported[0]).embed_queries(features)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


# (encoder, trained per position, members)
TRAININGS = ([(encoder, False, 1) for encoder in ENCODERS] + [(encoder, True, 1) for encoder in (MEAN, RECENCY, ATTENTION)]
             + [(RECENCY, True, 3), (ATTENTION, False, 2)])


@pytest.fixture(scope="module", params=TRAININGS,
                ids=[f"{e}-{'per_position' if p else 'per_example'}-{m}" for e, p, m in TRAININGS])
def exported_by_encoder(request, split, fitted, exported, tmp_path_factory):
    """Each history encoder's model, trained briefly on single examples or on every position, alone
    or with other members, and exported (the mean-pool per-example one is ``fitted``)."""
    encoder, per_position, members = request.param
    if (encoder, per_position, members) == (fitted.params.shape.encoder, fitted.params.per_position, fitted.params.members):
        return fitted, exported[0]
    params = dataclasses.replace(PARAMS, epochs=2, per_position=per_position, members=members,
                                 shape=dataclasses.replace(PARAMS.shape, encoder=encoder, dropout=0.2))
    model = TwoTowerRecommender(params)
    model.fit(split.train, split.catalog)
    directory = tmp_path_factory.mktemp(f"two_tower_{encoder}_{per_position}_{members}")
    export_two_tower(model, directory, split.known_items, query_users=sorted(split.test))
    return model, directory


def made_up_queries(split, count: int, history_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Unknown users, unknown and repeated items, short and empty histories, every age bucket,
    unknown regions and devices, every hour."""
    rng = np.random.default_rng(seed)
    users = [*rng.choice(sorted(split.test), count // 2).tolist(), *(f"never-seen-{n}" for n in range(count - count // 2))]
    items = [*split.known_items, *(f"new-item-{n}" for n in range(40))]
    histories = [rng.choice(items, rng.integers(0, history_len + 1)).tolist() for _ in users]
    regions = rng.choice(["", "eu", "us", "apac", "mars"], len(users))
    devices = rng.choice(["", "tv", "mobile", "web", "toaster"], len(users))
    return query_features(np.asarray(users, dtype=object), pad_rows(histories, history_len),
                          rng.integers(0, AGE_BUCKETS, (len(users), history_len)), regions, devices,
                          rng.integers(0, 24, len(users)))


def test_the_numpy_user_tower_equals_the_saved_model(split, exported_by_encoder):
    """Serving embeds with the numpy tower: for every history encoder, on every test user and on
    1,000 made-up queries, it gives the SavedModel's embedding within 1e-5."""
    model, directory = exported_by_encoder
    reloaded = ExportedTwoTower(directory)
    assert isinstance(reloaded.numpy_tower, NumpyUserTower)
    assert reloaded.numpy_tower.encoder == model.params.shape.encoder
    known = model.user_features(sorted(split.test))
    made_up = made_up_queries(split, 1000, model.params.history_len)
    assert (made_up["history"] != "").any(axis=1).sum() > 900
    for features in (known, made_up):
        np.testing.assert_allclose(reloaded.numpy_tower.embed_queries(features), reloaded.embed_queries(features),
                                   rtol=0, atol=1e-5)


def test_order_and_age_move_the_query_of_a_sequence_encoder(split, exported_by_encoder):
    """The recency, attention and GRU towers see the history's order and ages; mean-pooling does not."""
    model, directory = exported_by_encoder
    tower = ExportedTwoTower(directory).numpy_tower
    items = list(split.known_items[:5])
    recent = tower.embed_features("u", items, [3] * 5, "", "", 12)
    reordered = tower.embed_features("u", items[::-1], [3] * 5, "", "", 12)
    older = tower.embed_features("u", items, [3, 3, 20, 20, 20], "", "", 12)
    moved = [not np.allclose(recent, other, atol=1e-6) for other in (reordered, older)]
    assert moved == ([False, False] if model.params.shape.encoder == MEAN else [True, True])


def test_unknown_users_and_items_still_get_embeddings(split, fitted):
    scores = fitted.score(["never-seen-user"], ["never-seen-item", split.known_items[0]])
    assert np.isfinite(scores).all()
    new_items = fitted.embed_items(["brand-new-a", "brand-new-b"])
    np.testing.assert_allclose(np.linalg.norm(new_items, axis=1), 1.0, atol=1e-5)


def test_a_new_item_is_placed_by_its_categories(split, fitted, monkeypatch):
    categories = sorted({c for cats in split.catalog.categories.values() for c in cats})
    monkeypatch.setitem(fitted.item_fields.categories, "new-a", (categories[0],))
    monkeypatch.setitem(fitted.item_fields.categories, "new-b", (categories[-1],))
    a, b = fitted.embed_items(["new-a", "new-b"])
    assert not np.allclose(a, b)


def test_release_years_bucket_by_five_years_with_an_unknown_bucket():
    buckets = release_year_buckets([None, 1850, 1920, 1924, 1925, 1995, 2029, 2030, 2500])
    assert buckets[0] == UNKNOWN_YEAR and UNKNOWN_YEAR not in buckets[1:]
    assert buckets[1] == buckets[2] == buckets[3] != buckets[4]  # before 1920 shares 1920's bucket
    assert buckets[6] < buckets[7] == buckets[8] == YEAR_BUCKETS - 1  # from 2030 on: the last bucket


def test_title_words_are_distinct_lower_case_and_leave_the_release_year_to_its_own_feature():
    assert title_tokens("Heat, The (1995)", 1995) == ["heat", "the"]
    assert title_tokens("2001: A Space Odyssey (1968)", 1968) == ["2001", "a", "space", "odyssey"]
    assert title_tokens("Up Up_and Away", None) == ["up", "and", "away"]
    fields = ItemFields(titles={"a": "The Heat", "b": "Heat Wave", "c": "Solo"})
    assert Vocabularies.build([], ["a", "b", "c"], [], [], fields).title_tokens == ("heat",)  # a word of one title: OOV


def _embeddings_of_one_item_as_its_year_and_title_change(split, catalog_fields: bool) -> list[np.ndarray]:
    shape = dataclasses.replace(PARAMS.shape, catalog_fields=catalog_fields)
    model = TwoTowerRecommender(TwoTowerParams(epochs=0, shape=shape, history_len=PARAMS.history_len))
    model.fit(split.train, split.catalog)
    word = next(token for title in split.catalog.titles.values() for token in title_tokens(title))
    embeddings = []
    for title, year in ((word, 1995), (word, 1960), ("zzz-unseen", 1995)):
        model.item_fields.titles["new"], model.item_fields.release_years["new"] = title, year
        model.forget_item_embeddings()
        embeddings.append(model.embed_items(["new"])[0])
    return embeddings


def test_the_item_tower_reads_release_year_and_title_words_unless_the_search_turns_them_off(split):
    first, other_year, other_title = _embeddings_of_one_item_as_its_year_and_title_change(split, catalog_fields=True)
    assert not np.allclose(first, other_year, atol=1e-6) and not np.allclose(first, other_title, atol=1e-6)
    first, other_year, other_title = _embeddings_of_one_item_as_its_year_and_title_change(split, catalog_fields=False)
    np.testing.assert_array_equal(first, other_year)
    np.testing.assert_array_equal(first, other_title)


def test_same_seed_gives_the_same_scores(split, fitted):
    again = TwoTowerRecommender(PARAMS)
    again.fit(split.train, split.catalog)
    users = sorted(split.test)[:10]
    np.testing.assert_array_equal(again.score(users, split.known_items), fitted.score(users, split.known_items))


def test_members_are_distinct_models_and_their_first_ones_score_as_their_own_ensemble(split):
    """The members' query is each member's unit query side by side over sqrt(members); the first
    members' part of it scores as those members' mean cosine, which the search measures."""
    model = TwoTowerRecommender(dataclasses.replace(PARAMS, epochs=2, members=3))
    model.fit(split.train, split.catalog)
    users, items = sorted(split.test)[:20], split.known_items
    user_features = model.user_features(users)
    catalog_features = item_features(items, model.item_fields, model.params.max_categories)
    towers = model.model.user_tower.towers, model.model.item_tower.towers
    cosines = [user(user_features).numpy() @ item(catalog_features).numpy().T for user, item in zip(*towers)]
    assert not np.allclose(cosines[0], cosines[1], atol=1e-3)
    for first in (1, 2, 3):
        np.testing.assert_allclose(model.score(users, items, members=first), sum(cosines[:first]) / 3, rtol=0, atol=1e-5)
    queries = model.embed_queries(user_features)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_the_best_cell_of_a_members_curve_prefers_fewer_members_and_epochs_on_a_tie():
    from training.two_tower.search import ValidationCurve

    class Fitted:
        params = PARAMS

    curve = ValidationCurve(Fitted(), None, patience=3, members=(1, 2, 4))
    curve.curves.update({1: [0.1, 0.3, 0.3], 2: [0.2, 0.3, 0.3], 4: [0.3, 0.25, 0.3]})
    assert curve.best() == (1, 2) and curve.scores == curve.curves[4]


def test_an_encoder_keeps_no_more_members_than_serving_can_afford():
    from training.two_tower.space import MOST_MEMBERS, SPACES

    full = SPACES["full"]
    assert full.members_for(MEAN) == full.members_for(RECENCY) == full.members
    assert full.members_for(ATTENTION) == tuple(n for n in full.members if n <= MOST_MEMBERS[ATTENTION]) != full.members


def test_zero_epochs_builds_an_untrained_model_that_still_scores(split):
    model = TwoTowerRecommender(TwoTowerParams(epochs=0, shape=PARAMS.shape, history_len=PARAMS.history_len))
    model.fit(split.train, split.catalog)
    assert model.loss_curve == []
    assert np.isfinite(model.score(sorted(split.test)[:2], split.known_items)).all()


def test_a_version_exported_before_the_order_aware_tower_still_serves():
    """Rollback: the golden fixture was exported before history ages and encoders existed. It loads,
    mean-pools, and serving's timed call gives the SavedModel's embedding of the same items."""
    from modelfiles.registry import ModelVersion
    from serving.model import ServingModel

    directory = Path(__file__).with_name("fixtures") / "funnel_model"
    exported = ExportedTwoTower(directory)
    assert "history_age" not in exported.spec["inputs"] and exported.numpy_tower.encoder == "mean"
    model = ServingModel.load(ModelVersion("golden", directory, {}))
    items = exported.item_ids[:7].tolist()
    served = model.embed_user("u1", [(item, 1_000 * n) for n, item in enumerate(items)], "eu", "tv", 3,
                              log_clock_ms=10**9)
    width = model.history_length
    features = query_features(np.array(["u1"], dtype=object), pad_rows([items], width), np.zeros((1, width), np.int64),
                              ["eu"], ["tv"], [3])
    np.testing.assert_allclose(served, exported.embed_queries(features)[0], rtol=0, atol=1e-5)


def test_the_search_is_a_seeded_sample_that_tries_every_encoder_first():
    from training.two_tower.space import SPACES

    space, base = SPACES["full"], TwoTowerParams()
    trials = space.configurations(base, seed=0)
    assert trials == space.configurations(base, seed=0) != space.configurations(base, seed=1)
    assert trials[0] == base and len(trials) == len(set(trials)) == space.trials
    # Second, the same configuration without the item tower's catalog fields: validation weighs
    # them before anything else, so even two trials can turn them off.
    assert trials[1] == dataclasses.replace(base, shape=dataclasses.replace(base.shape, catalog_fields=False))
    assert {params.shape.encoder for params in trials[2: 2 + len(space.encoder)]} == set(space.encoder)
    assert all(params.shape.dropout == 0.0 for params in trials if params.shape.encoder in (MEAN, RECENCY))
    # The attention tower is tried both trained on every position and on single examples.
    assert {params.per_position for params in trials if params.shape.encoder == ATTENTION} == {False, True}
