"""Builders shared by the transform tests: interactions and event-time-stamped inputs."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from streams.schema import Interaction

# A day boundary (a multiple of 24 h since the epoch), so day and hour buckets start here.
DAY0 = 1_699_920_000_000


def interaction(
    item: str = "i1",
    event_type: str = "click",
    event_time: int = DAY0,
    *,
    user: str = "u1",
    value: float | None = None,
    region: str = "",
    partition: int = 0,
    offset: int = 0,
    log_watermark: int = -1,
) -> Interaction:
    return Interaction(user, item, event_type, value, event_time, region, "", "", partition, offset,
                       log_watermark=log_watermark)


def stamped_events(pipeline: beam.Pipeline, events: list[Interaction]):
    """The events stamped with their event time, as the source emits them."""
    return (
        pipeline
        | "Events" >> beam.Create(events, reshuffle=False)
        | "Stamp" >> beam.Map(lambda event: TimestampedValue(event, event.event_time / 1000))
    )


def assert_feature(transform: beam.PTransform, events: list[Interaction], feature: str, expected: list) -> None:
    """Runs ``transform`` over the stamped ``events``; its ``feature`` mutations must be ``expected``."""
    with beam.Pipeline() as pipeline:
        mutations = stamped_events(pipeline, events) | transform
        assert_that(mutations | beam.Filter(lambda m: m.feature == feature), equal_to(expected))
