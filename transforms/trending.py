"""Trending: weighted interest per item per event-time hour, globally and per region."""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.definitions import GLOBAL_SCOPE, Feature, Mutation, Op, region_scope
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, on_time_in_buckets

def trending_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    weight = config.weight(event)
    if not weight:
        return
    field = f"{bucket_start_ms}|{event.item_id}"
    yield Mutation(Op.COUNT, Feature.TRENDING, GLOBAL_SCOPE, field, weight)
    if event.region:
        yield Mutation(Op.COUNT, Feature.TRENDING, region_scope(event.region), field, weight)


class Trending(ExtractedFeature):
    """TRENDING COUNT of integer weights per (scope, trending bucket, item) of the on-time records;
    scope "global" and, for records with a region, "region:<region>"."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return on_time_in_buckets(config, config.trending_bucket_ms, trending_mutations)
