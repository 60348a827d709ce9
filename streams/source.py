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
``streams.partition_read``); a dead letter's log time. Records that fail validation leave on the
``DEAD_LETTER`` output (batched: inside their batch); the pipeline never stops for bad data. Offsets are owned by the
calling job: no consumer group, no commits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import apache_beam as beam

from kapparec.errors import UsageError
from streams.fetched_batch import FetchedBatch
from streams.partition_read import DEAD_LETTER, DEFAULT_CONSUMER_CONFIG, RECORDS, FollowPartitionFn, ReadPartitionFn
from streams.read_plan import StopSignal, plan_reads
from streams.schema import parse_interaction

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
        batched: ``RECORDS`` carries one ``FetchedBatch`` (a list) per fetched batch (one
            partition's records in log order, timed by the earliest) instead of one element per
            record: what a consumer that works on whole batches takes, without Beam's cost per
            element. Each batch carries its dead letters (``FetchedBatch.letters``), and
            ``DEAD_LETTER`` stays empty.
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
        batched: bool = False,
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
        self._fn_args = (FollowPartitionFn if follow else ReadPartitionFn, bootstrap, config, poll_timeout_ms,
                         idle_timeout_s, stop, batched)

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
        fn_class, bootstrap, config, poll_timeout_ms, idle_timeout_s, stop, batched = self._fn_args
        fn = fn_class(bootstrap, self._parsers, config, poll_timeout_ms, idle_timeout_s, stop, batched)
        read = beam.ParDo(fn)
        if batched:
            read = read.with_output_types(FetchedBatch)  # its coder estimates a batch's size without pickling it
        return (
            pbegin
            | "Partitions" >> beam.Create(self.reads)
            # Lets a distributed runner read partitions on different workers.
            | "SpreadPartitions" >> beam.Reshuffle()
            | "ReadPartitions" >> read.with_outputs(DEAD_LETTER, main=RECORDS)
        )
