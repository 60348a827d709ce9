"""The current catalog: the latest version of every item in log order."""

from __future__ import annotations

import json

import apache_beam as beam

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import CatalogEntry
from transforms.mutations import CombineMutations, position_order


def catalog_payload(entry: CatalogEntry) -> str:
    """The entry as compact JSON, without its log position (that is the order, not the data)."""
    fields = entry._asdict()
    del fields["partition"], fields["offset"]
    if fields["release_year"] is None:
        # Schema 1's fields alone: an item without a year keeps the payload a store built before
        # schema 2 holds, so that store still equals a replay.
        del fields["release_year"]
    return json.dumps(fields, separators=(",", ":"))


def catalog_mutation(entry: CatalogEntry) -> Mutation:
    # Ordered by log position, not by any time in the entry: the items topic is keyed by item
    # id, so all versions of one item sit in one partition and its offsets order them.
    return Mutation(
        Op.LATEST, Feature.CATALOG, "", entry.item_id, catalog_payload(entry), order=position_order(entry.partition, entry.offset)
    )


class CatalogState(beam.PTransform):
    """CATALOG LATEST: per item, the JSON of its latest catalog version in log order."""

    def expand(self, entries):
        return entries | "ToMutation" >> beam.Map(catalog_mutation) | "Combine" >> CombineMutations()
