"""Trending: distinct users per scope (global, region) and event-time hour bucket."""

from __future__ import annotations

from featurestore.definitions import Feature, Mutation, Op
from kapparec.timeunits import HOUR_MS
from tests.transforms_helpers import DAY0, assert_feature, interaction
from transforms.config import FeatureConfig
from transforms.trending import Trending

CONFIG = FeatureConfig()


def distinct(scope: str, hour: int, item_user: str, count: int) -> Mutation:
    return Mutation(Op.DISTINCT, Feature.TRENDING, f"{scope}|{hour}", item_user, count,
                    str(hour + CONFIG.trending_retention_ms), CONFIG.trending_actor_cap)


def test_each_user_engagement_counts_per_item_hour_globally_and_in_the_region():
    events = [
        interaction("i1", "play", DAY0 + 1, region="eu", offset=0),
        interaction("i1", "complete", DAY0 + 2, region="eu", offset=1),  # the same user again
        interaction("i1", "click", DAY0 + HOUR_MS - 1, user="u2", offset=2),
        interaction("i1", "like", DAY0 + HOUR_MS, region="eu", offset=3),
        interaction("i2", "impression", DAY0 + 2, region="eu", offset=4),  # not an engagement
    ]
    expected = [
        distinct("global", DAY0, "i1|u1", 2),
        distinct("region:eu", DAY0, "i1|u1", 2),
        distinct("global", DAY0, "i1|u2", 1),
        distinct("global", DAY0 + HOUR_MS, "i1|u1", 1),
        distinct("region:eu", DAY0 + HOUR_MS, "i1|u1", 1),
    ]
    assert_feature(Trending(CONFIG), events, Feature.TRENDING, expected)
