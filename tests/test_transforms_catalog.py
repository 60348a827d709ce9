"""CatalogState: the latest catalog version of each item in log order, as compact JSON."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import CatalogEntry
from transforms.catalog import CatalogState, catalog_payload
from transforms.mutations import position_order


def entry(item: str, title: str, offset: int, partition: int = 0) -> CatalogEntry:
    return CatalogEntry(item, title, ("drama",), ("eu",), None, 1_000, True, partition, offset)


def test_payload_is_the_entry_without_its_log_position():
    assert json.loads(catalog_payload(entry("i1", "Up", 4))) == {
        "item_id": "i1", "title": "Up", "categories": ["drama"], "regions": ["eu"], "age_rating": None,
        "created_at": 1_000, "active": True,
    }


def test_a_release_year_joins_the_payload_and_an_item_without_one_keeps_schema_1s_payload():
    undated = entry("i1", "Up", 4)
    assert "release_year" not in json.loads(catalog_payload(undated))
    assert json.loads(catalog_payload(undated._replace(release_year=2009)))["release_year"] == 2009


def test_latest_version_in_log_order_wins():
    # Offset 10 beats offset 9 even though "9" > "10" as plain strings: orders are padded.
    entries = [entry("i1", "old", 9), entry("i1", "new", 10), entry("i2", "only", 3, partition=1)]
    expected = [
        Mutation(Op.LATEST, Feature.CATALOG, "", "i1", catalog_payload(entries[1]), order=position_order(0, 10)),
        Mutation(Op.LATEST, Feature.CATALOG, "", "i2", catalog_payload(entries[2]), order=position_order(1, 3)),
    ]
    with beam.Pipeline() as pipeline:
        assert_that(pipeline | beam.Create(entries) | CatalogState(), equal_to(expected))
