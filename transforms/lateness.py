"""Late records: which ones are too late for the windowed features, how many there were, and
how far event time has got in each partition.

Lateness is judged against the record's ``log_watermark`` (the highest event time among the
earlier records of its Kafka partition, set by the source) rather than against a runner's
watermark: the log fixes it, so every replay and every split of the log into batches judges
each record the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import Interaction
from streams.topics import EVENTS
from transforms.config import FeatureConfig
from transforms.mutations import CombineMutations


def is_late(event: Interaction, allowed_lateness_ms: int) -> bool:
    """Whether the record is too late for its event-time window.

    A record with no earlier record in its partition (log_watermark -1) is never late.
    """
    return event.event_time < event.log_watermark - allowed_lateness_ms


class _LogProgressFn(beam.DoFn):
    def __init__(self, allowed_lateness_ms: int):
        self._allowed_lateness_ms = allowed_lateness_ms

    def process(self, event: Interaction) -> Iterable[Mutation]:
        partition = str(event.partition)
        yield Mutation(Op.MAX, Feature.HIGH_WATER, EVENTS, partition, event.event_time)
        if is_late(event, self._allowed_lateness_ms):
            yield Mutation(Op.COUNT, Feature.LATE, EVENTS, partition, 1)


class Lateness(beam.PTransform):
    """LATE: per partition, the records too late for the windowed features (counted, not lost
    silently). HIGH_WATER: per partition, the greatest event time of all records."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self._config = config

    def expand(self, events):
        return (
            events
            | "LogProgress" >> beam.ParDo(_LogProgressFn(self._config.allowed_lateness_ms))
            | "Combine" >> CombineMutations()
        )


# emit(config, event, bucket_start_ms) -> the event's mutations in that bucket
BucketEmitter = Callable[[FeatureConfig, Interaction, int], Iterable[Mutation]]


class _OnTimeFn(beam.DoFn):
    def __init__(self, allowed_lateness_ms: int):
        self._allowed_lateness_ms = allowed_lateness_ms

    def process(self, event: Interaction) -> Iterator[TimestampedValue]:
        if not is_late(event, self._allowed_lateness_ms):
            yield TimestampedValue(event, event.event_time / 1000)


class OnTime(beam.PTransform):
    """The records that are not late, stamped with their event time.

    Stamped here, not trusted from upstream: a source that forgot to stamp would otherwise
    put every record in one wrong bucket without any error.
    """

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self._config = config

    def expand(self, events):
        return events | "OnTime" >> beam.ParDo(_OnTimeFn(self._config.allowed_lateness_ms))


class _EmitInBucketFn(beam.DoFn):
    def __init__(self, config: FeatureConfig, emit: BucketEmitter):
        self._config = config
        self._emit = emit

    def process(self, event: Interaction, window=beam.DoFn.WindowParam) -> Iterable[Mutation]:
        return self._emit(self._config, event, window.start.micros // 1000)


class OnTimeBuckets(beam.PTransform):
    """The frame of every windowed feature: on-time records in fixed event-time buckets.

    Drops late records (``Lateness`` counts them), windows the others by event time into
    buckets of ``bucket_ms``, calls ``emit`` with the bucket start, and merges in the global
    window: the bucket is already in each mutation's field, and a combine in non-global
    windows costs the Python runners a trigger state machine per key.
    """

    def __init__(self, config: FeatureConfig, bucket_ms: int, emit: BucketEmitter):
        super().__init__()
        self._config = config
        self._bucket_ms = bucket_ms
        self._emit = emit

    def expand(self, events):
        return (
            events
            | "OnTime" >> OnTime(self._config)
            | "Bucket" >> beam.WindowInto(FixedWindows(self._bucket_ms / 1000))
            | "Emit" >> beam.ParDo(_EmitInBucketFn(self._config, self._emit))
            | "Unbucket" >> beam.WindowInto(GlobalWindows())
            | "Combine" >> CombineMutations()
        )
