"""CategoryAffinity: integer interest weight per user, item and event-time day bucket."""

from __future__ import annotations

from featurestore.definitions import Feature, Mutation, Op
from kapparec.timeunits import DAY_MS, HOUR_MS
from tests.transforms_helpers import DAY0, assert_feature, interaction
from transforms.affinity import CategoryAffinity
from transforms.config import FeatureConfig


def test_weights_sum_per_item_and_day():
    events = [
        interaction("i1", "like", DAY0 + 1, offset=0),
        interaction("i1", "rate", DAY0 + 2, value=3.0, offset=1),
        interaction("i1", "impression", DAY0 + 3, offset=2),  # weight 0: no mutation at all
        interaction("i1", "purchase", DAY0 + DAY_MS + 3, offset=3),
        interaction("i2", "click", DAY0 + 4, user="u2", offset=4),
    ]
    expected = [weighed("u1", DAY0, "i1", 5), weighed("u1", DAY0 + DAY_MS, "i1", 5), weighed("u2", DAY0, "i2", 1)]
    assert_feature(CategoryAffinity(FeatureConfig()), events, Feature.AFFINITY, expected)


def test_late_records_are_skipped():
    on_time = interaction("i1", "click", DAY0 + 10 * HOUR_MS, offset=0)
    late = interaction("i2", "click", DAY0, offset=1, log_watermark=on_time.event_time)
    config = FeatureConfig(allowed_lateness_ms=HOUR_MS)
    assert_feature(CategoryAffinity(config), [on_time, late], Feature.AFFINITY, [weighed("u1", DAY0, "i1", 1)])


def weighed(user: str, day: int, item: str, weight: int) -> Mutation:
    return Mutation(Op.COUNT, Feature.AFFINITY, f"{user}|{day}", item, weight, str(day + FeatureConfig().affinity_retention_ms))
