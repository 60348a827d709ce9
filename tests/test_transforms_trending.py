"""Trending: weighted counts per scope (global, region) and event-time hour bucket."""

from __future__ import annotations

from featurestore.definitions import Feature, Mutation, Op
from tests.transforms_helpers import DAY0, assert_feature, interaction
from transforms.config import HOUR_MS, FeatureConfig
from transforms.trending import Trending


def test_global_and_regional_hourly_counts():
    events = [
        interaction("i1", "play", DAY0 + 1, region="eu", offset=0),
        interaction("i1", "click", DAY0 + HOUR_MS - 1, user="u2", offset=1),
        interaction("i1", "like", DAY0 + HOUR_MS, region="eu", offset=2),
        interaction("i2", "impression", DAY0 + 2, region="eu", offset=3),  # weight 0
    ]
    expected = [
        Mutation(Op.COUNT, Feature.TRENDING, "global", f"{DAY0}|i1", 3),
        Mutation(Op.COUNT, Feature.TRENDING, "region:eu", f"{DAY0}|i1", 2),
        Mutation(Op.COUNT, Feature.TRENDING, "global", f"{DAY0 + HOUR_MS}|i1", 4),
        Mutation(Op.COUNT, Feature.TRENDING, "region:eu", f"{DAY0 + HOUR_MS}|i1", 4),
    ]
    assert_feature(Trending(FeatureConfig()), events, Feature.TRENDING, expected)
