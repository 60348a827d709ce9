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
        counted("i1", DAY0, "click", 2),
        counted("i1", DAY0, "impression", 1),
        counted("i1", DAY0 + DAY_MS, "click", 1),
        counted("i2", DAY0 + DAY_MS, "purchase", 1),
    ]
    assert_feature(ItemPopularity(CONFIG), events, Feature.POPULARITY, expected)


CONFIG = FeatureConfig()


def counted(item: str, day: int, event_type: str, count: int) -> Mutation:
    return Mutation(Op.COUNT, Feature.POPULARITY, f"{item}|{day}", event_type, count, str(day + CONFIG.popularity_retention_ms))
