"""ItemPopularity: raw counts per item, event type and event-time day bucket."""

from __future__ import annotations

from featurestore.definitions import Feature, Mutation, Op
from kapparec.timeunits import DAY_MS
from tests.transforms_helpers import DAY0, assert_feature, interaction
from transforms.config import FeatureConfig
from transforms.popularity import ItemPopularity


def test_counts_per_type_in_day_buckets():
    events = [
        interaction("i1", "click", DAY0 + 5, offset=0),
        interaction("i1", "click", DAY0 + DAY_MS - 1, user="u2", offset=1),
        interaction("i1", "impression", DAY0 + 7, offset=2),
        interaction("i1", "click", DAY0 + DAY_MS, offset=3),
        interaction("i2", "purchase", DAY0 + DAY_MS + 1, offset=4),
    ]
    expected = [
        Mutation(Op.COUNT, Feature.POPULARITY, "i1", f"click|{DAY0}", 2),
        Mutation(Op.COUNT, Feature.POPULARITY, "i1", f"impression|{DAY0}", 1),
        Mutation(Op.COUNT, Feature.POPULARITY, "i1", f"click|{DAY0 + DAY_MS}", 1),
        Mutation(Op.COUNT, Feature.POPULARITY, "i2", f"purchase|{DAY0 + DAY_MS}", 1),
    ]
    assert_feature(ItemPopularity(FeatureConfig()), events, Feature.POPULARITY, expected)
