"""training.data: columns from log records, the catalog, positives and point-in-time histories."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from streams.schema import CatalogEntry, Interaction
from training.data import Catalog, Interactions, retrieval_positives


def event(user, item, time, kind="view", value=None, partition=0, offset=0, region="", device=""):
    return Interaction(user, item, kind, value, time, region, device, "", partition, offset)


def entry(item, title, offset, active=True, partition=0):
    return CatalogEntry(item, title, ("drama",), (), None, 1_000, active, partition, offset)


def test_from_events_sorts_by_time_then_log_position():
    rows = Interactions.from_events(
        [
            event("u1", "late", 300, offset=0),
            event("u1", "tie-p1", 200, partition=1, offset=0),
            event("u2", "tie-p0-o5", 200, partition=0, offset=5),
            event("u2", "tie-p0-o4", 200, partition=0, offset=4, kind="rate", value=4.5, region="eu", device="tv"),
            event("u3", "early", 100, offset=9),
        ]
    )
    assert rows.item_ids.tolist() == ["early", "tie-p0-o4", "tie-p0-o5", "tie-p1", "late"]
    assert rows.event_times.dtype == np.int64 and rows.event_times.tolist() == [100, 200, 200, 200, 300]
    assert rows.values[1] == 4.5 and math.isnan(rows.values[0])
    assert (rows.event_types[1], rows.regions[1], rows.devices[1]) == ("rate", "eu", "tv")
    assert len(rows) == 5


def test_empty_events_give_empty_columns():
    rows = Interactions.from_events([])
    assert len(rows) == 0 and rows.user_ids.dtype == object


def test_columns_of_different_lengths_are_refused():
    good = Interactions.from_columns(["u"], ["i"], [1])
    with pytest.raises(ValueError, match="differ in length"):
        dataclasses.replace(good, item_ids=good.item_ids[:0])


def test_take_selects_rows_in_every_column():
    rows = Interactions.from_columns(["a", "b", "c"], ["x", "y", "z"], [1, 2, 3])
    picked = rows.take(np.array([True, False, True]))
    assert picked.user_ids.tolist() == ["a", "c"] and picked.event_times.tolist() == [1, 3]
    assert len(picked.values) == len(picked.devices) == 2


def test_catalog_keeps_the_latest_version_and_drops_deactivated_items():
    catalog = Catalog.from_entries(
        [
            entry("m2", "New title", offset=7),
            entry("m2", "Old title", offset=3),
            entry("m1", "Gone", offset=1),
            entry("m1", "Gone for good", offset=2, active=False),
            entry("m3", "Other partition", offset=0, partition=1),
        ]
    )
    assert catalog.item_ids == ["m2", "m3"]
    assert catalog.titles == {"m2": "New title", "m3": "Other partition"}
    assert catalog.categories["m2"] == ("drama",) and catalog.created_at["m3"] == 1_000
    assert len(catalog) == 2


def test_positives_drop_impressions_and_dislikes_keep_every_rating_and_dedupe_pairs():
    rows = Interactions.from_events(
        [
            event("u", "shown", 1, kind="impression"),
            event("u", "hated", 2, kind="dislike"),
            event("u", "low", 3, kind="rate", value=0.5),
            event("u", "film", 4, kind="click"),
            event("u", "film", 5, kind="complete"),
            event("v", "film", 6, kind="purchase"),
        ]
    )
    positives = retrieval_positives(rows)
    assert list(zip(positives.user_ids, positives.item_ids, positives.event_times)) == [
        ("u", "low", 3),
        ("u", "film", 4),
        ("v", "film", 6),
    ]
