"""Trending: weighted interest per item per event-time hour, globally and per region."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.lateness import OnTimeBuckets

GLOBAL_SCOPE = "global"


def region_scope(region: str) -> str:
    return f"region:{region}"


def trending_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    weight = config.weight(event)
    if not weight:
        return
    field = f"{bucket_start_ms}|{event.item_id}"
    yield Mutation(Op.COUNT, Feature.TRENDING, GLOBAL_SCOPE, field, weight)
    if event.region:
        yield Mutation(Op.COUNT, Feature.TRENDING, region_scope(event.region), field, weight)


class Trending(beam.PTransform):
    """TRENDING COUNT of integer weights per (scope, trending bucket, item) of the on-time records;
    scope "global" and, for records with a region, "region:<region>"."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self._config = config

    def expand(self, events):
        return events | "Buckets" >> OnTimeBuckets(self._config, self._config.trending_bucket_ms, trending_mutations)
