"""Item popularity: how many interactions of each type every item got per event-time day."""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.definitions import Feature, Mutation, Op, window_entity
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, on_time_in_buckets


def popularity_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    # Raw counts per type (impressions too: the reader derives click-through from them).
    yield Mutation(Op.COUNT, Feature.POPULARITY, window_entity(event.item_id, bucket_start_ms), event.event_type, 1,
                   str(bucket_start_ms + config.popularity_retention_ms))


class ItemPopularity(ExtractedFeature):
    """POPULARITY COUNT per (item, popularity bucket, event type) of the on-time records, kept
    ``popularity_retention_ms`` in log time."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return on_time_in_buckets(config, config.popularity_bucket_ms, popularity_mutations)
