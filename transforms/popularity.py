"""Item popularity: how many interactions of each type every item got per event-time day."""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, on_time_in_buckets


def popularity_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    # Raw counts per type (impressions too: the reader derives click-through from them).
    yield Mutation(Op.COUNT, Feature.POPULARITY, event.item_id, f"{event.event_type}|{bucket_start_ms}", 1)


class ItemPopularity(ExtractedFeature):
    """POPULARITY COUNT per (item, event type, popularity bucket) of the on-time records."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return on_time_in_buckets(config, config.popularity_bucket_ms, popularity_mutations)
