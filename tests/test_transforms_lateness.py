"""Lateness: late records are counted, never dropped silently; records within the allowed
lateness still update their window; the high-water mark follows event time per partition."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from featurestore.definitions import Feature, Mutation, Op
from kapparec.timeunits import HOUR_MS
from tests.transforms_helpers import DAY0, interaction, stamped_events
from transforms.config import FeatureConfig
from transforms.features import ComputeFeatures
from transforms.lateness import Lateness, is_late
from transforms.trending import Trending

CONFIG = FeatureConfig(allowed_lateness_ms=2 * HOUR_MS)
WATERMARK = DAY0 + 10 * HOUR_MS


def test_is_late_only_beyond_the_allowed_lateness():
    assert not is_late(interaction(event_time=0, log_watermark=-1), 0)
    assert not is_late(interaction(event_time=WATERMARK - 2 * HOUR_MS, log_watermark=WATERMARK), 2 * HOUR_MS)
    assert is_late(interaction(event_time=WATERMARK - 2 * HOUR_MS - 1, log_watermark=WATERMARK), 2 * HOUR_MS)


def test_late_records_are_counted_per_partition_and_high_water_is_the_max_event_time():
    events = [
        interaction("i1", event_time=WATERMARK, partition=0, offset=0),
        interaction("i1", event_time=DAY0, partition=0, offset=1, log_watermark=WATERMARK),  # late
        interaction("i1", event_time=DAY0 + 1, partition=0, offset=2, log_watermark=WATERMARK),  # late
        interaction("i1", event_time=DAY0 + 3 * HOUR_MS, partition=1, offset=0),
    ]
    expected = [
        Mutation(Op.MAX, Feature.HIGH_WATER, "events", "0", WATERMARK),
        Mutation(Op.MAX, Feature.HIGH_WATER, "events", "1", DAY0 + 3 * HOUR_MS),
        Mutation(Op.COUNT, Feature.LATE, "events", "0", 2),
    ]
    with beam.Pipeline() as pipeline:
        assert_that(stamped_events(pipeline, events) | Lateness(CONFIG), equal_to(expected))


def test_a_record_within_allowed_lateness_updates_its_window_and_a_later_one_is_counted():
    # Trending buckets are hours: the on-time record opens hour 10, the slightly late one
    # (1 h behind the watermark) still lands in hour 9, the very late one (hour 1) only counts.
    events = [
        interaction("i1", "click", WATERMARK, offset=0),
        interaction("i1", "click", WATERMARK - HOUR_MS, offset=1, log_watermark=WATERMARK),
        interaction("i1", "click", DAY0 + HOUR_MS, offset=2, log_watermark=WATERMARK),
    ]
    expected = [
        trending(WATERMARK),
        trending(WATERMARK - HOUR_MS),
        Mutation(Op.COUNT, Feature.LATE, "events", "0", 1),
    ]
    with beam.Pipeline() as pipeline:
        topics = {"events": stamped_events(pipeline, events), "catalog": pipeline | "Catalog" >> beam.Create([])}
        mutations = topics | ComputeFeatures(CONFIG)
        selected = mutations | beam.Filter(lambda m: m.feature in (Feature.TRENDING, Feature.LATE))
        assert_that(selected, equal_to(expected))


def test_buckets_follow_event_time_even_if_the_source_did_not_stamp_it():
    events = [interaction("i1", event_time=DAY0 + 3 * HOUR_MS + 5, offset=0)]
    with beam.Pipeline() as pipeline:
        unstamped = pipeline | beam.Create(events)
        expected = [trending(DAY0 + 3 * HOUR_MS)]
        assert_that(unstamped | Trending(CONFIG), equal_to(expected))


def trending(hour: int) -> Mutation:
    """User u1's one engagement with i1 in ``hour``, globally."""
    return Mutation(Op.DISTINCT, Feature.TRENDING, f"global|{hour}", "i1|u1", 1, str(hour + CONFIG.trending_retention_ms),
                    CONFIG.trending_actor_cap)
