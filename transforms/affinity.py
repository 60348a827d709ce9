"""User affinity: how much weight of interest each user gave each item per event-time day.

Counts are per item, not per category: the reader joins items with the current catalog at
read time. A join here would depend on whether the item's catalog record sat in the same
micro-batch (and would freeze categories that change later), breaking split invariance.
"""

from __future__ import annotations

from featurestore.definitions import Feature, Op, window_entity
from transforms.extract import EventBatch, ExtractedFeature
from transforms.mutations import MergedMutations


def add_affinity(batch: EventBatch, merged: MergedMutations) -> None:
    config = batch.config
    bucket_ms, retention_ms = config.affinity_bucket_ms, config.affinity_retention_ms
    for event, weight in batch.engaged:
        start = event.event_time - event.event_time % bucket_ms
        items = merged.fields(Op.COUNT, Feature.AFFINITY, window_entity(event.user_id, start), str(start + retention_ms))
        items[event.item_id] = items.get(event.item_id, 0) + weight


class CategoryAffinity(ExtractedFeature):
    """AFFINITY COUNT of integer weights per (user, affinity bucket, item) of the on-time records,
    kept ``affinity_retention_ms`` in log time."""

    extract = staticmethod(add_affinity)
