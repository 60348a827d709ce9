"""Trending: the distinct users who engaged with each item per event-time hour, globally and per region.

Distinct users, not events: one actor adds at most 1 to an item's hour, however many events they
send, and an actor past ``trending_actor_cap`` events on one item within one hour (no person plays
a film thirty times an hour) adds nothing: a burst from a few accounts cannot move a trending
list. Each (user, item, hour) keeps its event count, so such actors can be named
(``FeatureReader.suspects``).
Hours expire ``trending_retention_ms`` after they start, in log time.
"""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.definitions import GLOBAL_SCOPE, Feature, Mutation, Op, region_scope, window_entity
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, on_time_in_buckets


def trending_mutations(config: FeatureConfig, event: Interaction, bucket_start_ms: int) -> Iterator[Mutation]:
    if not config.weight(event):
        return
    field, expiry = f"{event.item_id}|{event.user_id}", str(bucket_start_ms + config.trending_retention_ms)
    cap = config.trending_actor_cap
    yield Mutation(Op.DISTINCT, Feature.TRENDING, window_entity(GLOBAL_SCOPE, bucket_start_ms), field, 1, expiry, cap)
    if event.region:
        yield Mutation(Op.DISTINCT, Feature.TRENDING, window_entity(region_scope(event.region), bucket_start_ms),
                       field, 1, expiry, cap)


class Trending(ExtractedFeature):
    """TRENDING DISTINCT per (scope, trending bucket, item, user) of the on-time engagements;
    scope "global" and, for records with a region, "region:<region>"."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return on_time_in_buckets(config, config.trending_bucket_ms, trending_mutations)
