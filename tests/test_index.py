"""Exact and ScaNN retrieval on small synthetic catalogs: exactness, recall, save/load, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kapparec.errors import KapparecError
from modelfiles.index import (
    LEAF_TOLERANCE,
    BruteForceIndex,
    ScannIndex,
    ScannParams,
    calibrated,
    load_index,
    recall_against_exact,
)
from training.bench import clustered_catalog, user_queries


@pytest.fixture(scope="module")
def catalog():
    """A clustered 20k x 32 catalog (structure like trained embeddings) and 200 user queries."""
    rng = np.random.default_rng(7)
    items, topics = clustered_catalog(20_000, 32, rng)
    return items, np.array([f"item-{i}" for i in range(len(items))], dtype=object), user_queries(topics, 200, rng)


@pytest.fixture(scope="module")
def scann_index(catalog):
    items, ids, _ = catalog
    return ScannIndex(items, ids)


def test_brute_force_is_exact():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    ids = [f"i{n}" for n in range(500)]
    found, scores = BruteForceIndex(items, ids).search(queries, 5)
    full = queries @ items.T
    expected_order = np.argsort(-full, axis=1)[:, :5]
    assert found.tolist() == [[ids[j] for j in row] for row in expected_order]
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected_order, axis=1), rtol=1e-5)


def test_single_query_and_k_beyond_catalog():
    items = np.eye(3, dtype=np.float32)
    found, scores = BruteForceIndex(items, ["a", "b", "c"]).search(np.array([0.1, 0.9, 0.5]), 10)
    assert found.tolist() == [["b", "c", "a"]]
    assert scores.shape == (1, 3)


class _FixedAnswer:
    """An index that answers every query with the given catalog positions."""

    def __init__(self, positions: list[int]):
        self.positions = np.array([positions])

    def search_positions(self, queries, k):
        return self.positions[:, :k], np.zeros((1, k), dtype=np.float32)


def test_recall_counts_an_item_tied_with_the_kth_as_a_hit_and_a_lower_one_as_a_miss():
    # "twin" is "b" again: either one is a correct second answer to a query along b.
    items = np.array([[1, 0], [0.8, 0.6], [0.8, 0.6], [0, 1]], dtype=np.float32)
    exact, query = BruteForceIndex(items, ["a", "b", "twin", "c"]), np.array([[1, 0]], dtype=np.float32)
    assert recall_against_exact(_FixedAnswer([0, 2]), exact, query, k=2) == 1.0
    assert recall_against_exact(_FixedAnswer([0, 1]), exact, query, k=2) == 1.0
    assert recall_against_exact(_FixedAnswer([0, 3]), exact, query, k=2) == 0.5


def test_scann_recall_on_clustered_catalog(catalog, scann_index):
    items, ids, queries = catalog
    assert scann_index.params.num_leaves > 0 and scann_index.params.dims_per_block > 0  # really approximate
    recall = recall_against_exact(scann_index, BruteForceIndex(items, ids), queries, k=10)
    assert recall >= 0.9


@pytest.mark.parametrize("target", [0.95, 0.995])
def test_calibration_searches_the_fewest_doubled_leaves_that_reach_the_target(catalog, scann_index, target):
    items, ids, queries = catalog
    exact = BruteForceIndex(items, ids)
    index, steps = calibrated(scann_index, exact, queries[:100], k=10, target=target)
    recalls = {step["leaves"]: step["recall@10"] for step in steps}
    chosen, every_leaf = index.params.leaves_to_search, scann_index.params.num_leaves
    assert list(recalls) == sorted(recalls) and every_leaf in recalls  # every leaf is the bound, always measured
    doubled = [leaves for leaves in recalls if leaves <= chosen]
    assert doubled[0] == scann_index.params.leaves_to_search
    assert all(after == min(2 * before, every_leaf) for before, after in zip(doubled, doubled[1:]))
    goal = min(target, recalls[every_leaf] - LEAF_TOLERANCE)
    assert all(recalls[leaves] < goal for leaves in doubled[:-1]) and recalls[chosen] >= goal
    assert recall_against_exact(index, exact, queries[:100], k=10) == pytest.approx(recalls[chosen], abs=1e-4)
    assert index.searcher is scann_index.searcher  # nothing rebuilt


def test_calibration_stops_where_the_quantizer_bounds_recall(catalog):
    """Rescoring too few candidates exactly caps recall below the target at any number of leaves:
    the doubling stops within ``LEAF_TOLERANCE`` of every leaf's recall, not at every leaf."""
    items, ids, queries = catalog
    coarse = ScannIndex(items, ids, ScannParams(num_leaves=141, leaves_to_search=8, training_sample_size=20_000,
                                               dims_per_block=8, anisotropic_threshold=0.2, reorder_num_neighbors=10))
    index, steps = calibrated(coarse, BruteForceIndex(items, ids), queries[:100], k=10, target=0.99)
    bound = steps[-1]["recall@10"]
    assert steps[-1]["leaves"] == 141 and bound < 0.99 - LEAF_TOLERANCE
    assert index.params.leaves_to_search < 141
    assert {step["leaves"]: step["recall@10"] for step in steps}[index.params.leaves_to_search] >= bound - LEAF_TOLERANCE


def test_a_stricter_target_searches_more_leaves_and_finds_more(catalog, scann_index):
    items, ids, queries = catalog
    exact = BruteForceIndex(items, ids)
    loose, _ = calibrated(scann_index, exact, queries[:100], k=10, target=0.5)
    strict, steps = calibrated(scann_index, exact, queries[:100], k=10, target=1.0)
    assert strict.params.leaves_to_search > loose.params.leaves_to_search
    assert recall_against_exact(strict, exact, queries[100:], k=10) > recall_against_exact(loose, exact, queries[100:], k=10)


def test_an_exact_index_needs_no_calibration(catalog):
    items, ids, queries = catalog
    exact = BruteForceIndex(items[:300], ids[:300])
    small = ScannIndex(items[:300], ids[:300])
    assert calibrated(small, exact, queries, k=10) == (small, [])
    assert calibrated(exact, exact, queries, k=10) == (exact, [])


def test_scann_single_query_matches_batch(catalog, scann_index):
    _, _, queries = catalog
    batch_ids, batch_scores = scann_index.search(queries[:5], 10)
    for row, query in enumerate(queries[:5]):
        one_ids, one_scores = scann_index.search(query, 10)
        assert one_ids.tolist() == [batch_ids[row].tolist()]
        np.testing.assert_allclose(one_scores[0], batch_scores[row], rtol=1e-5)


def test_scann_save_load_gives_identical_results_after_a_move(tmp_path, catalog, scann_index):
    _, _, queries = catalog
    scann_index.save(tmp_path / "staging")
    os.rename(tmp_path / "staging", tmp_path / "final")  # what the registry does with artifacts
    loaded = load_index(tmp_path / "final")
    assert isinstance(loaded, ScannIndex) and loaded.params == scann_index.params
    before_ids, before_scores = scann_index.search(queries, 10)
    after_ids, after_scores = loaded.search(queries, 10)
    assert after_ids.tolist() == before_ids.tolist()
    np.testing.assert_array_equal(after_scores, before_scores)


def test_brute_force_save_load(tmp_path, catalog):
    items, ids, queries = catalog
    exact = BruteForceIndex(items[:1000], ids[:1000])
    exact.save(tmp_path / "exact")
    loaded = load_index(tmp_path / "exact")
    assert isinstance(loaded, BruteForceIndex)
    assert loaded.search(queries, 10)[0].tolist() == exact.search(queries, 10)[0].tolist()


def test_small_catalog_is_exact_inside_scann(catalog):
    items, ids, queries = catalog
    params = ScannParams.for_catalog(300)
    assert params.exact
    small = ScannIndex(items[:300], ids[:300], params)
    assert recall_against_exact(small, BruteForceIndex(items[:300], ids[:300]), queries, k=10) == 1.0


def test_params_grow_with_the_catalog():
    medium, large = ScannParams.for_catalog(100_000), ScannParams.for_catalog(1_000_000)
    assert medium.num_leaves == 316 and large.num_leaves == 1000
    assert large.leaves_to_search > medium.leaves_to_search
    assert large.training_sample_size <= 250_000


@pytest.mark.parametrize(
    "embeddings, ids, message",
    [
        (np.zeros((3, 4)), ["a", "b"], "2 ids for 3 embeddings"),
        (np.zeros((0, 4)), [], "non-empty"),
        (np.array([[np.nan, 1.0]]), ["a"], "NaN"),
        (np.eye(2), ["a", "a"], "not unique"),
    ],
)
def test_bad_catalog_is_a_clear_error(embeddings, ids, message):
    with pytest.raises(KapparecError, match=message):
        BruteForceIndex(embeddings, ids)


def test_wrong_query_dimension_is_a_clear_error():
    with pytest.raises(KapparecError, match="4 dimensions"):
        BruteForceIndex(np.eye(4), list("abcd")).search(np.ones(3), 1)


def test_damaged_index_directory_is_a_clear_error(tmp_path):
    with pytest.raises(KapparecError, match="index.json missing"):
        load_index(tmp_path)
    BruteForceIndex(np.eye(2), ["a", "b"]).save(tmp_path)
    (tmp_path / "embeddings.npy").unlink()
    with pytest.raises(KapparecError, match="damaged"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": 1, "kind": "faiss", "count": 2, "dim": 2}))
    with pytest.raises(KapparecError, match="unknown kind 'faiss'"):
        load_index(tmp_path)
