"""training.split: the per-user chronological leave-last-out protocol on a hand-made dataset."""

from __future__ import annotations

import pytest

from kapparec.errors import KapparecError
from streams.schema import CatalogEntry
from training.data import Catalog, Interactions
from training.split import chronological_split


def tiny_log() -> Interactions:
    """'heavy' has 6 positives, 'light' 3; 'light' interleaves in time with 'heavy'."""
    users = ["heavy", "light", "heavy", "heavy", "light", "heavy", "heavy", "light", "heavy"]
    items = ["h1", "l1", "h2", "h3", "l2", "h4", "h5", "l3", "h6"]
    return Interactions.from_columns(users, items, [1, 2, 3, 4, 5, 6, 7, 8, 9])


def test_eligible_users_lose_their_last_items_to_the_test_set():
    split = chronological_split(tiny_log(), min_interactions=5, holdout=2)
    assert split.test == {"heavy": ["h5", "h6"]}  # chronological order
    assert split.train.item_ids.tolist() == ["h1", "l1", "h2", "h3", "l2", "h4", "l3"]
    assert split.cutoff_ms == 7
    assert (split.min_interactions, split.holdout) == (5, 2)


def test_users_below_the_threshold_stay_entirely_in_training():
    split = chronological_split(tiny_log(), min_interactions=3, holdout=1)
    assert split.test == {"heavy": ["h6"], "light": ["l3"]}
    split = chronological_split(tiny_log(), min_interactions=4, holdout=1)
    assert split.test == {"heavy": ["h6"]}
    assert set(split.train.item_ids.tolist()) >= {"l1", "l2", "l3"}


def test_known_items_are_training_items_plus_the_catalog():
    catalog = Catalog.from_entries([CatalogEntry("cold", "Never watched", (), (), None, 0, True, 0, 0)])
    split = chronological_split(tiny_log(), min_interactions=5, holdout=2, catalog=catalog)
    # h5 and h6 occur only in the test set: without the catalog they are not in the universe.
    assert split.known_items == ["cold", "h1", "h2", "h3", "h4", "l1", "l2", "l3"]
    assert split.catalog is catalog


def test_nobody_eligible_gives_an_empty_test_set_and_a_cutoff_after_the_data():
    split = chronological_split(tiny_log(), min_interactions=50, holdout=10)
    assert split.test == {} and len(split.train) == 9 and split.cutoff_ms == 10


def test_an_empty_log_and_a_bad_holdout_are_clear_errors():
    with pytest.raises(KapparecError, match="no interactions"):
        chronological_split(Interactions.empty())
    with pytest.raises(KapparecError, match="holdout"):
        chronological_split(tiny_log(), min_interactions=5, holdout=5)
