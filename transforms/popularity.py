"""Item popularity: how many interactions of each type every item got per event-time day."""

from __future__ import annotations

from collections import Counter

from featurestore.definitions import Feature, Op, window_entity
from transforms.extract import EventBatch, ExtractedFeature
from transforms.mutations import MergedMutations


def add_popularity(batch: EventBatch, merged: MergedMutations) -> None:
    # Raw counts per type (impressions too: the reader derives click-through from them).
    config = batch.config
    bucket_ms, retention_ms = config.popularity_bucket_ms, config.popularity_retention_ms
    # Counted by (item, bucket, type) at C speed first: the entity strings are built once per key.
    per_key = Counter((event.item_id, event.event_time - event.event_time % bucket_ms, event.event_type)
                      for event in batch.on_time)
    for (item, start, event_type), count in per_key.items():
        merged.add_sum(Op.COUNT, Feature.POPULARITY, window_entity(item, start), event_type, count,
                       str(start + retention_ms))


class ItemPopularity(ExtractedFeature):
    """POPULARITY COUNT per (item, popularity bucket, event type) of the on-time records, kept
    ``popularity_retention_ms`` in log time."""

    extract = staticmethod(add_popularity)
