"""User affinity: how much weight of interest each user gave each item per event-time day.

Counts are per item, not per category: the reader joins items with the current catalog at
read time. A join here would depend on whether the item's catalog record sat in the same
micro-batch (and would freeze categories that change later), breaking split invariance.
"""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.definitions import Feature, Mutation, Op, window_entity
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, on_time_in_buckets


def affinity_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    weight = config.weight(event)
    if weight:
        yield Mutation(Op.COUNT, Feature.AFFINITY, window_entity(event.user_id, bucket_start_ms), event.item_id, weight,
                       str(bucket_start_ms + config.affinity_retention_ms))


class CategoryAffinity(ExtractedFeature):
    """AFFINITY COUNT of integer weights per (user, affinity bucket, item) of the on-time records,
    kept ``affinity_retention_ms`` in log time."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return on_time_in_buckets(config, config.affinity_bucket_ms, affinity_mutations)
