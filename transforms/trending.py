"""Trending: the distinct users who engaged with each item per event-time hour, globally and per region.

Distinct users, not events: one actor adds at most 1 to an item's hour, however many events they
send, and an actor past ``trending_actor_cap`` events on one item within one hour (no person plays
a film thirty times an hour) adds nothing: a burst from a few accounts cannot move a trending
list. Each (user, item, hour) keeps its event count, so such actors can be named
(``FeatureReader.suspects``).
Hours expire ``trending_retention_ms`` after they start, in log time.
"""

from __future__ import annotations

from collections import Counter

from featurestore.definitions import GLOBAL_SCOPE, Feature, Op, region_scope, window_entity
from transforms.extract import EventBatch, ExtractedFeature
from transforms.mutations import MergedMutations


def add_trending(batch: EventBatch, merged: MergedMutations) -> None:
    config = batch.config
    bucket_ms, retention_ms, cap = config.trending_bucket_ms, config.trending_retention_ms, config.trending_actor_cap
    # Counted by (scope, bucket, item, user) at C speed first: the strings are built once per key.
    per_key = Counter((event.region, event.event_time - event.event_time % bucket_ms, event.item_id, event.user_id)
                      for event, _ in batch.engaged)
    for (region, start, item, user), count in per_key.items():
        field, window = f"{item}|{user}", (str(start + retention_ms), cap)
        merged.add_sum(Op.DISTINCT, Feature.TRENDING, window_entity(GLOBAL_SCOPE, start), field, count, window)
        if region:
            merged.add_sum(Op.DISTINCT, Feature.TRENDING, window_entity(region_scope(region), start), field, count, window)
    for region, start in {(region, start) for region, start, _, _ in per_key if region}:
        merged.fields(Op.ADD, Feature.TRENDING_SCOPES, str(start), str(start + retention_ms))[region_scope(region)] = None


class Trending(ExtractedFeature):
    """TRENDING DISTINCT per (scope, trending bucket, item, user) of the on-time engagements;
    scope "global" and, for records with a region, "region:<region>" (listed in the bucket's
    TRENDING_SCOPES)."""

    extract = staticmethod(add_trending)
