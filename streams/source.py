"""A pure-Python Beam source for the Kafka log: a splittable DoFn over kafka-python.

Beam's own ``ReadFromKafka`` needs a Java expansion service; this one runs wherever the
Python SDK harness runs (DirectRunner/FnApiRunner here, the portable FlinkRunner in
production). One element per partition; its restriction is the offset range still to
read *plus the log-order high water* (the highest event time seen so far in the
partition), because every interaction carries the high water of the records before it
and a restriction resumed elsewhere must know it exactly.

* Bounded (``ranges`` given, or a snapshot of ``[beginning, end)`` taken at construction):
  reads exactly ``[start, stop)`` of each partition and finishes once the consumer position
  reaches ``stop``, so offsets missing at the end of a range (compaction, transaction
  markers) do not hang the read.
* Unbounded (``follow=True``): reads on forever from ``start_offsets``, defers when the log
  is idle and reports an event-time watermark that falls back to wall-clock time when the
  partition stays idle, so downstream windows can close.

Element timestamps: an interaction's event time; a catalog version's log time (see
``_LogTimed``); a dead letter's log time. Records that fail validation leave on the
``DEAD_LETTER`` output; the pipeline never stops for bad data. Offsets are owned by the
calling job: no consumer group, no commits.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker, WatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from kafka import KafkaConsumer, TopicPartition

from kapparec.errors import KapparecError, UsageError
from streams import offsets
from streams.dlq import DeadLetter
from streams.schema import Interaction, InvalidRecord, parse_interaction

RECORDS = "records"
DEAD_LETTER = "dead_letter"
METRICS_NAMESPACE = "kapparec.source"

# The stop of a followed partition: Beam's largest int64, a log end that never comes.
UNBOUNDED = 2**63 - 1
# The high water before any record, and the time claimed for invalid records, which move none.
NO_EVENT_TIME = -1

# A bounded read waits this long for records it knows exist before failing loudly.
STALL_TIMEOUT_S = 60.0
# When an idle partition's watermark falls back to the wall clock, it trails it by this much
# so that a record already on its way is not made late.
IDLE_WATERMARK_LAG_S = 5.0
# A followed partition hands control back to the runner this often even while records flow,
# so bundles finish and downstream stages see output.
FOLLOW_CHECKPOINT_S = 0.25

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


class StopSignal(Protocol):
    """Tells a followed read to end (picklable: it travels to the workers)."""

    def should_stop(self) -> bool: ...


class PartitionRead(NamedTuple):
    """The element of the read: one partition, where to start and stop, and its high water."""

    topic: str
    partition: int
    start: int
    stop: int
    high_water: int = NO_EVENT_TIME


class LogRestriction(NamedTuple):
    """Offsets ``[start, stop)`` still to read, and the highest event time before ``start``."""

    start: int
    stop: int
    high_water: int


class _LogRestrictionCoder(coders.Coder):
    """Three varints, deterministic and language-neutral enough for any portable runner."""

    _ints = coders.TupleCoder([coders.VarIntCoder()] * 3)

    def encode(self, value: LogRestriction) -> bytes:
        return self._ints.encode(tuple(value))

    def decode(self, encoded: bytes) -> LogRestriction:
        return LogRestriction(*self._ints.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


class LogRestrictionTracker(RestrictionTracker):
    """Claims record offsets in log order and keeps the high water of what it claimed.

    A claimed position is ``(offset, event_time)``: the tracker moves the high water as it
    claims, so a checkpoint residual carries the exact high water of the records before it.
    Only checkpoints split a restriction: a split anywhere else would start a residual at a
    record whose high water is not known yet.
    """

    def __init__(self, restriction: LogRestriction):
        self._restriction = restriction
        self._next = restriction.start  # the first offset not claimed yet
        self._high_water = restriction.high_water
        self._reached_stop = restriction.start >= restriction.stop

    def current_restriction(self) -> LogRestriction:
        return self._restriction

    def try_claim(self, position: tuple[int, int]) -> bool:
        offset, event_time = position
        if offset >= self._restriction.stop:
            self._reached_stop = True
            return False
        if offset < self._next:
            raise ValueError(f"offset {offset} claimed after {self._next - 1}: claims must move forward")
        self._next = offset + 1
        if event_time > self._high_water:
            self._high_water = event_time
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[LogRestriction, LogRestriction] | None:
        if fraction_of_remainder != 0 or self._reached_stop or self._next >= self._restriction.stop:
            return None
        start, stop, high_water = self._restriction
        primary = LogRestriction(start, self._next, high_water)
        residual = LogRestriction(self._next, stop, self._high_water)
        self._restriction = primary
        return primary, residual

    def check_done(self) -> None:
        if not (self._reached_stop or self._next >= self._restriction.stop):
            raise ValueError(f"offsets [{self._next}, {self._restriction.stop}) were neither read nor split off")

    def current_progress(self) -> RestrictionProgress:
        start, stop, _ = self._restriction
        remaining = stop - self._next if self.is_bounded() else 1
        return RestrictionProgress(completed=self._next - start, remaining=remaining)

    def is_bounded(self) -> bool:
        return self._restriction.stop != UNBOUNDED


class _LogRestrictionProvider(RestrictionProvider):
    def initial_restriction(self, element: PartitionRead) -> LogRestriction:
        return LogRestriction(element.start, element.stop, element.high_water)

    def create_tracker(self, restriction: LogRestriction) -> LogRestrictionTracker:
        return LogRestrictionTracker(restriction)

    def restriction_size(self, element: PartitionRead, restriction: LogRestriction) -> int:
        # An unbounded restriction has no size; 1 keeps it schedulable without claiming it is huge.
        return 1 if restriction.stop == UNBOUNDED else restriction.stop - restriction.start

    def restriction_coder(self) -> coders.Coder:
        return _LogRestrictionCoder()


class EventTimeWatermarkEstimator(WatermarkEstimator):
    """The highest event time read so far; the wall clock (minus a lag) once the partition idles.

    Fed by the DoFn once per batch rather than per output: dead letters carry their log
    time, which must not move an event-time watermark.
    """

    def __init__(self, state: tuple[Timestamp, Timestamp], idle_timeout_s: float):
        self._watermark, self._last_record_at = state
        self._idle_timeout = Duration(seconds=idle_timeout_s)

    def advance(self, high_water_ms: int) -> None:
        """Records arrived; the highest event time read so far is ``high_water_ms`` (-1: none yet)."""
        self._last_record_at = Timestamp.now()
        if high_water_ms >= 0:
            self._watermark = max(self._watermark, Timestamp(micros=high_water_ms * 1000))

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def current_watermark(self) -> Timestamp:
        now = Timestamp.now()
        if now - self._last_record_at > self._idle_timeout:
            self._watermark = max(self._watermark, now - Duration(seconds=IDLE_WATERMARK_LAG_S))
        return self._watermark

    def get_estimator_state(self) -> tuple[Timestamp, Timestamp]:
        return self._watermark, self._last_record_at


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
    def stamp(value: Any, high_water: int, time_ms: int, windows: tuple) -> WindowedValue:
        # log_watermark is the last field; tuple.__new__ is _replace without its per-call
        # field lookups, and this runs per record.
        with_watermark = tuple.__new__(Interaction, value[:-1] + (high_water,))
        return WindowedValue(with_watermark, Timestamp(micros=time_ms * 1000), windows)


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
    def stamp(value: Any, high_water: int, time_ms: int, windows: tuple) -> WindowedValue:
        return WindowedValue(value, Timestamp(micros=time_ms * 1000), windows)


def _record_kind(parse: Callable) -> _Interactions | _LogTimed:
    return _Interactions(parse) if parse is parse_interaction else _LogTimed(parse)


_RESTRICTIONS = _LogRestrictionProvider()


class _ReadPartitionFn(beam.DoFn, WatermarkEstimatorProvider):
    """Reads one partition's restriction; one consumer per DoFn instance, reused across elements."""

    def __init__(
        self, bootstrap: str, parsers: dict[str, Callable], consumer_config: dict, poll_timeout_ms: int,
        idle_timeout_s: float, stop: StopSignal | None = None,
    ):
        self._bootstrap = bootstrap
        self._stop = stop
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
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(),
    ) -> Iterator[Any]:
        start, stop, high_water = tracker.current_restriction()
        if self._stop is not None and self._stop.should_stop():
            tracker.try_claim((stop, NO_EVENT_TIME))  # ends the restriction: nothing left to read
            return
        # Outputs are WindowedValues in the element's (global) window: what a TimestampedValue
        # would become, without Beam assigning a window per record.
        windows = (window,)
        tp = TopicPartition(element.topic, element.partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        position = start
        began = last_progress = time.monotonic()
        while position < stop:
            batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms).get(tp)
            if not batch:
                if stop == UNBOUNDED:
                    tracker.defer_remainder(Duration(seconds=self._poll_timeout_ms / 1000))
                    return
                if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise KapparecError(f"{tp.topic}/{tp.partition} yielded nothing at offset {position} before {stop}")
                continue
            last_progress = time.monotonic()
            # The kind's methods are bound once: this loop runs per record.
            kind = self._kinds[element.topic]
            parse, time_of, stamp = kind.parse, kind.time_ms, kind.stamp
            valid = dead = 0
            for record in batch:
                try:
                    value = parse(record, tp.partition)
                except InvalidRecord as invalid:
                    if not tracker.try_claim((record.offset, NO_EVENT_TIME)):
                        break
                    dead += 1
                    letter = DeadLetter(invalid.reason, record.value, record.key, tp.topic, tp.partition, record.offset)
                    log_time = Timestamp(micros=record.timestamp * 1000)
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER, WindowedValue(letter, log_time, windows))
                    continue
                time_ms = time_of(value, record)
                if not tracker.try_claim((record.offset, time_ms)):
                    break
                valid += 1
                yield stamp(value, high_water, time_ms, windows)
                if time_ms > high_water:
                    high_water = time_ms
            self._count(valid, dead)
            watermark.advance(high_water)
            if valid + dead < len(batch):  # a claim failed: the stop or a checkpoint was reached
                return
            position = self._consumer.position(tp)
            if stop == UNBOUNDED and time.monotonic() - began > FOLLOW_CHECKPOINT_S:
                tracker.defer_remainder()
                return
        # Offsets up to stop may be missing (compaction, transaction markers): the position is proof enough.
        tracker.try_claim((stop, NO_EVENT_TIME))

    def _count(self, valid: int, dead: int) -> None:
        self._records_read.inc(valid + dead)
        self._valid.inc(valid)
        self._dead_lettered.inc(dead)


class _FollowPartitionFn(_ReadPartitionFn):
    """The same read, declared unbounded so Beam treats its output as a stream."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionRead,
        window=beam.DoFn.WindowParam,
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(),
    ) -> Iterator[Any]:
        return super().process(element, window, tracker, watermark)


def plan_reads(
    bootstrap: str,
    topic: str,
    *,
    ranges: dict[int, tuple[int, int]] | None = None,
    follow: bool = False,
    start_offsets: dict[int, int] | None = None,
    start_high_water: dict[int, int] | None = None,
) -> list[PartitionRead]:
    """One ``PartitionRead`` per partition, checked against the log as it is now."""
    available = offsets.offset_ranges(bootstrap, topic)
    if follow:
        if ranges is not None:
            raise UsageError("follow mode reads without a stop: give start_offsets, not ranges")
        starts = start_offsets if start_offsets is not None else {p: begin for p, (begin, _) in available.items()}
        wanted = {p: (start, UNBOUNDED) for p, start in starts.items()}
    else:
        if start_offsets is not None:
            raise UsageError("a bounded read takes ranges, not start_offsets")
        wanted = ranges if ranges is not None else available
    high_waters = start_high_water or {}
    _check_partitions(topic, available, wanted, high_waters)
    return [
        PartitionRead(topic, p, start, stop, high_waters.get(p, NO_EVENT_TIME))
        for p, (start, stop) in sorted(wanted.items())
    ]


def _check_partitions(
    topic: str, available: dict[int, tuple[int, int]], wanted: dict[int, tuple[int, int]], high_waters: dict[int, int]
) -> None:
    unknown = sorted((set(wanted) | set(high_waters)) - set(available))
    if unknown:
        raise KapparecError(f"topic {topic!r} has no partition {unknown}")
    for partition, (start, stop) in wanted.items():
        begin, end = available[partition]
        if start < begin:
            raise KapparecError(
                f"{topic}/{partition}: offsets before {begin} are gone from the log, cannot start at {start}"
            )
        if stop < start:
            raise KapparecError(f"{topic}/{partition}: range [{start}, {stop}) is backwards")
        # A bounded read must end: a stop beyond the log end would wait for records that may never come.
        if stop != UNBOUNDED and stop > end:
            raise KapparecError(f"{topic}/{partition}: stop {stop} is beyond the log end {end}")


class ReadFromKafka(beam.PTransform):
    """Reads a topic as parsed records (main output ``RECORDS``) and ``DeadLetter``s (``DEAD_LETTER``).

    The partitions and offsets are fixed when the transform is built, so the same
    pipeline object always reads the same records.

    Args:
        parse: ``parse_interaction`` (records timed by event time, ``log_watermark`` filled)
            or any parser taking ``(raw, partition=, offset=)`` such as ``parse_catalog``
            (records timed by their log time).
        ranges: bounded mode, ``{partition: (start, stop)}``; None reads every partition's
            ``[beginning, end)`` as of now. A stop beyond the log end is refused (the read
            could wait forever), and so is a start before the log beginning (records lost).
        follow: unbounded mode, reading each partition from ``start_offsets`` (default: the
            log beginning) on forever. Partitions added later are not picked up.
        start_high_water: per partition, the highest event time before the first offset
            read (committed by the previous micro-batch); -1 if absent.
        poll_timeout_ms: how long one poll waits; in follow mode also the resume delay after
            an empty poll.
        idle_timeout_s: follow mode: after this long without records the watermark moves
            to the wall clock minus ``IDLE_WATERMARK_LAG_S``.
        stop: follow mode: checked whenever a partition's read resumes; once it says so,
            the read ends (how a long-lived continuous job is stopped or re-planned).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        parse: Callable = parse_interaction,
        *,
        ranges: dict[int, tuple[int, int]] | None = None,
        follow: bool = False,
        start_offsets: dict[int, int] | None = None,
        start_high_water: dict[int, int] | None = None,
        consumer_config: dict | None = None,
        poll_timeout_ms: int = 500,
        idle_timeout_s: float = 10.0,
        stop: StopSignal | None = None,
    ):
        super().__init__()
        self.reads = plan_reads(
            bootstrap,
            topic,
            ranges=ranges,
            follow=follow,
            start_offsets=start_offsets,
            start_high_water=start_high_water,
        )
        if stop is not None and not follow:
            raise UsageError("only a followed read takes a stop signal: a bounded read ends at its ranges")
        self._parsers = {topic: parse}
        config = {**DEFAULT_CONSUMER_CONFIG, **(consumer_config or {})}
        self._fn_args = (_FollowPartitionFn if follow else _ReadPartitionFn, bootstrap, config, poll_timeout_ms,
                         idle_timeout_s, stop)

    def and_topic(self, other: "ReadFromKafka") -> "ReadFromKafka":
        """One read of both topics (``other`` built with the same settings): one source stage.

        The local runner drives one unbounded stage at a time, so a continuous job that reads
        two topics with two sources would only ever read the first.
        """
        if other._fn_args != self._fn_args:
            raise UsageError("topics read together share their read settings")
        both = copy.copy(self)
        both.reads = [*self.reads, *other.reads]
        both._parsers = {**self._parsers, **other._parsers}
        return both

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        fn_class, bootstrap, config, poll_timeout_ms, idle_timeout_s, stop = self._fn_args
        fn = fn_class(bootstrap, self._parsers, config, poll_timeout_ms, idle_timeout_s, stop)
        return (
            pbegin
            | "Partitions" >> beam.Create(self.reads)
            # Lets a distributed runner read partitions on different workers.
            | "SpreadPartitions" >> beam.Reshuffle()
            | "ReadPartitions" >> beam.ParDo(fn).with_outputs(DEAD_LETTER, main=RECORDS)
        )
