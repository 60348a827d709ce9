"""Reading one partition's restriction: the DoFn behind ``ReadFromKafka``, bounded and followed.

A bounded read seeks its partition and reads to the restriction's stop in one call. A
followed restriction has no stop: each resume hands over what one shared fetch brought for
its partition (``streams.follow_fetch``) and defers the rest, so every round of the runner
ends its bundle (and so commits) within one fetch; ``FollowPartitionFn`` declares the read
unbounded so Beam treats its output as a stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from kafka import KafkaConsumer, TopicPartition

from kapparec.errors import KapparecError
from streams.dlq import DeadLetter
from streams.fetched_batch import FetchedBatch
from streams.follow_fetch import SharedFetch
from streams.read_plan import NO_EVENT_TIME, PartitionRead, StopSignal
from streams.restriction import RESTRICTIONS, LogRestriction
from streams.schema import Interaction, InvalidRecord, parse_interaction, parse_interactions
from streams.watermark import EventTimeWatermarkEstimator

RECORDS = "records"
DEAD_LETTER = "dead_letter"
METRICS_NAMESPACE = "kapparec.source"

# A bounded read waits this long for records it knows exist before failing loudly.
STALL_TIMEOUT_S = 60.0

# Big fetches: the per-poll cost of kafka-python is fixed, the per-record cost is not.
# check_crcs=False, as librdkafka defaults: without the optional crc32c C extension
# kafka-python checksums in pure Python, which costs more than decoding the records; the
# broker verifies CRCs on produce and TCP guards the transfer.
DEFAULT_CONSUMER_CONFIG: dict[str, Any] = {
    "check_crcs": False,
    "max_poll_records": 20_000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
}


class _Interactions:
    """Interactions: timed by event time, carrying the log-order watermark."""

    def __init__(self, parse: Callable):
        self._parse = parse

    def parse(self, record: Any, partition: int) -> Any:
        return self._parse(record.value, partition=partition, offset=record.offset, log_time_ms=record.timestamp)

    @staticmethod
    def time_ms(value: Any, record: Any) -> int:
        return value.event_time

    @staticmethod
    def carry(value: Any, high_water: int) -> Any:
        # log_watermark is the last field; tuple.__new__ is _replace without its per-call
        # field lookups, and this runs per record.
        return tuple.__new__(Interaction, value[:-1] + (high_water,))

    @staticmethod
    def parse_batch(records: list, partition: int, high_water: int) -> tuple[list, list, int, int | None]:
        return parse_interactions(records, partition, high_water)


class _LogTimed:
    """Anything else (the catalog): timed by the record's log time, no log watermark to carry.

    A catalog version takes effect when it is appended, not when the item was created:
    ``created_at`` of an updated old item would make the update look years late.
    """

    def __init__(self, parse: Callable):
        self._parse = parse

    def parse(self, record: Any, partition: int) -> Any:
        return self._parse(record.value, partition=partition, offset=record.offset)

    @staticmethod
    def time_ms(value: Any, record: Any) -> int:
        return record.timestamp

    @staticmethod
    def carry(value: Any, high_water: int) -> Any:
        return value

    def parse_batch(self, records: list, partition: int, high_water: int) -> tuple[list, list, int, int | None]:
        """(the values, (record, InvalidRecord) of each refused one, the high water after them, the
        least time or None), as ``parse_interactions`` gives them for interactions."""
        parse, time_of = self.parse, self.time_ms  # bound once: this runs per record
        values, refused, least = [], [], None
        for record in records:
            try:
                value = parse(record, partition)
            except InvalidRecord as invalid:
                refused.append((record, invalid))
                continue
            time_ms = time_of(value, record)
            values.append(value)
            high_water = max(high_water, time_ms)
            least = time_ms if least is None else min(least, time_ms)
        return values, refused, high_water, least


def _record_kind(parse: Callable) -> _Interactions | _LogTimed:
    return _Interactions(parse) if parse is parse_interaction else _LogTimed(parse)


class ReadPartitionFn(beam.DoFn, WatermarkEstimatorProvider):
    """Reads one partition's restriction; one consumer per DoFn instance, reused across elements."""

    def __init__(
        self, bootstrap: str, parsers: dict[str, Callable], consumer_config: dict, poll_timeout_ms: int,
        idle_timeout_s: float, stop: StopSignal | None = None, batched: bool = False,
    ):
        self._bootstrap = bootstrap
        self._stop = stop
        self._batched = batched
        self._kinds = {topic: _record_kind(parse) for topic, parse in parsers.items()}
        self._consumer_config = consumer_config
        self._poll_timeout_ms = poll_timeout_ms
        self._idle_timeout_s = idle_timeout_s
        self._records_read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_read")
        self._valid = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "valid")
        self._dead_lettered = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "dead_lettered")

    # The DoFn is its own watermark estimator provider because the estimator needs its idle timeout.
    def initial_estimator_state(
        self, element: PartitionRead, restriction: LogRestriction
    ) -> tuple[Timestamp, Timestamp]:
        start = MIN_TIMESTAMP if restriction.high_water < 0 else Timestamp(micros=restriction.high_water * 1000)
        return start, Timestamp.now()

    def create_watermark_estimator(self, state: tuple[Timestamp, Timestamp]) -> EventTimeWatermarkEstimator:
        return EventTimeWatermarkEstimator(state, self._idle_timeout_s)

    def setup(self) -> None:
        self._read_fetched = self._read_batch if self._batched else self._read_records
        # auto_offset_reset="none": a start offset already gone from the log is an error, not a skip.
        self._consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            **self._consumer_config,
        )

    def teardown(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.close()

    def process(
        self,
        element: PartitionRead,
        window=beam.DoFn.WindowParam,
        tracker=beam.DoFn.RestrictionParam(RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(),
    ) -> Iterator[Any]:
        # The read lives in a helper: Beam warns about a process method whose source has a bare return.
        yield from self._read(element, window, tracker, watermark)

    def _read(self, element: PartitionRead, window, tracker, watermark) -> Iterator[Any]:
        start, stop, high_water = tracker.current_restriction()
        # Outputs are WindowedValues in the element's (global) window: what a TimestampedValue
        # would become, without Beam assigning a window per record.
        windows = (window,)
        tp = TopicPartition(element.topic, element.partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        position = start
        last_progress = time.monotonic()
        while position < stop:
            batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms).get(tp)
            if not batch:
                if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise KapparecError(f"{tp.topic}/{tp.partition} yielded nothing at offset {position} before {stop}")
                continue
            last_progress = time.monotonic()
            high_water, whole = yield from self._read_fetched(self._kinds[element.topic], tp, batch, stop, high_water,
                                                              tracker, windows)
            watermark.advance(high_water)
            if not whole:  # a claim failed: the runner split the restriction
                return
            position = self._consumer.position(tp)
        # Offsets up to stop may be missing (compaction, transaction markers): the position is proof enough.
        tracker.try_claim((stop, NO_EVENT_TIME))

    def _read_records(self, kind, tp: TopicPartition, batch: list, stop: int, high_water: int, tracker,
                      windows: tuple) -> Iterator[Any]:
        """One output per record, each claimed before it leaves; returns the high water after what
        was claimed, and whether that was the whole batch."""
        parse, time_of, carry = kind.parse, kind.time_ms, kind.carry  # bound once: this runs per record
        valid = dead = 0
        for record in batch:
            try:
                value = parse(record, tp.partition)
            except InvalidRecord as invalid:
                if not tracker.try_claim((record.offset, NO_EVENT_TIME)):
                    break
                dead += 1
                yield self._dead_letter(invalid, tp, record, windows)
                continue
            time_ms = time_of(value, record)
            if not tracker.try_claim((record.offset, time_ms)):
                break
            valid += 1
            yield WindowedValue(carry(value, high_water), Timestamp(micros=time_ms * 1000), windows)
            if time_ms > high_water:
                high_water = time_ms
        self._count(valid, dead)
        return high_water, valid + dead == len(batch)

    def _read_batch(self, kind, tp: TopicPartition, batch: list, stop: int, high_water: int, tracker,
                    windows: tuple) -> Iterator[Any]:
        """The fetched batch's valid records as one output (a list in log order) that carries the
        batch's dead letters, claimed at once by its last offset: nothing of it was claimed before,
        so a checkpoint taken meanwhile leaves it all to the residual. Returns the high water after
        what was claimed, and whether that was the whole batch.

        The letters travel with their records, not on ``DEAD_LETTER``: a consumer that moves
        offsets past them (the feature commit) must have them by then, and a runner keeps no order
        between two outputs."""
        if batch[-1].offset >= stop:
            batch = [record for record in batch if record.offset < stop]
            if not batch:
                tracker.try_claim((stop, NO_EVENT_TIME))
                return high_water, False
        before = high_water
        parsed, refused, high_water, first_ms = kind.parse_batch(batch, tp.partition, high_water)
        values = FetchedBatch(parsed, [self._letter(invalid, tp, record) for record, invalid in refused])
        if not tracker.try_claim((batch[-1].offset, high_water)):
            return before, False
        self._count(len(values), len(values.letters))
        if values or values.letters:
            # A batch of letters alone is timed by the first one's log time, as a letter is.
            at_ms = first_ms if values else refused[0][0].timestamp
            yield WindowedValue(values, Timestamp(micros=at_ms * 1000), windows)
        return high_water, True

    @staticmethod
    def _letter(invalid: InvalidRecord, tp: TopicPartition, record: Any) -> DeadLetter:
        return DeadLetter(invalid.reason, record.value, record.key, tp.topic, tp.partition, record.offset)

    def _dead_letter(self, invalid: InvalidRecord, tp: TopicPartition, record: Any, windows: tuple) -> Any:
        log_time = Timestamp(micros=record.timestamp * 1000)
        return beam.pvalue.TaggedOutput(DEAD_LETTER, WindowedValue(self._letter(invalid, tp, record), log_time, windows))

    def _count(self, valid: int, dead: int) -> None:
        self._records_read.inc(valid + dead)
        self._valid.inc(valid)
        self._dead_lettered.inc(dead)


class FollowPartitionFn(ReadPartitionFn):
    """The same read without a stop, declared unbounded so Beam treats its output as a stream."""

    def setup(self) -> None:
        super().setup()
        self._fetch = SharedFetch(self._consumer, self._poll_timeout_ms)

    def start_bundle(self) -> None:
        self._fetch.start_round()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionRead,
        window=beam.DoFn.WindowParam,
        tracker=beam.DoFn.RestrictionParam(RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(),
    ) -> Iterator[Any]:
        return super().process(element, window, tracker, watermark)

    def _read(self, element: PartitionRead, window, tracker, watermark) -> Iterator[Any]:
        start, stop, high_water = tracker.current_restriction()
        if self._stop is not None and self._stop.should_stop():
            tracker.try_claim((stop, NO_EVENT_TIME))  # ends the restriction: nothing left to read
            return
        tp = TopicPartition(element.topic, element.partition)
        batch = self._fetch.take(tp, start)
        if not batch:
            tracker.defer_remainder(Duration(seconds=self._poll_timeout_ms / 1000))
            return
        high_water, whole = yield from self._read_fetched(self._kinds[element.topic], tp, batch, stop, high_water,
                                                          tracker, (window,))
        watermark.advance(high_water)
        if whole:  # else a claim failed: the runner split the restriction, and the rest is its residual
            tracker.defer_remainder()
