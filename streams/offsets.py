"""Snapshots of where a topic's partitions begin and end, read without a consumer group.

A bounded replay reads ``[beginning, end)`` of every partition as they stood when the job
was built; these helpers take that snapshot. They fail fast on a missing topic rather
than letting kafka-python wait for metadata that will never come.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer, TopicPartition

from kapparec.errors import KapparecError

# Offset look-ups are single round trips; a broker that takes longer is unreachable in practice.
LOOKUP_TIMEOUT_MS = 10_000
# Confirming a log end takes one fetch; bound the wait in case the broker sends nothing.
PROBE_POLLS = 5
PROBE_POLL_MS = 200


@contextmanager
def metadata_consumer(bootstrap: str) -> Iterator[KafkaConsumer]:
    """A group-less consumer used only for metadata and offset look-ups."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=LOOKUP_TIMEOUT_MS + 1_000,
    )
    try:
        yield consumer
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str) -> list[int]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        raise KapparecError(f"topic {topic!r} does not exist")
    return sorted(found)


def partitions_for(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic``, sorted."""
    with metadata_consumer(bootstrap) as consumer:
        return _partitions(consumer, topic)


def offset_ranges(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition, ``(beginning, end)``: everything the log holds right now."""
    with metadata_consumer(bootstrap) as consumer:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic)]
        starts = consumer.beginning_offsets(tps, LOOKUP_TIMEOUT_MS)
        stops = consumer.end_offsets(tps, LOOKUP_TIMEOUT_MS)
        return {tp.partition: (starts[tp], _confirmed_end(consumer, tp, starts[tp], stops[tp])) for tp in tps}


def _confirmed_end(consumer: KafkaConsumer, tp: TopicPartition, start: int, listed_end: int) -> int:
    """The log end, checked against the high watermark of a real fetch.

    Not every Kafka-protocol broker answers ListOffsets(latest) exactly: one seen in this
    project's past listed the base offset of the last record batch plus one, so a snapshot
    missed the tail of a multi-record batch. The high watermark in a fetch response is exact
    on every broker, so fetch the last listed record and take the larger of the two.
    """
    if listed_end <= start:
        return listed_end
    consumer.assign([tp])
    consumer.seek(tp, listed_end - 1)
    for _ in range(PROBE_POLLS):
        consumer.poll(timeout_ms=PROBE_POLL_MS, max_records=1)
        high_water = consumer.highwater(tp)
        if high_water is not None:
            return max(listed_end, high_water)
    return listed_end


def beginning_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition, the offset of the oldest record still in the log."""
    return {p: start for p, (start, _) in offset_ranges(bootstrap, topic).items()}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition, the offset the next record will get (the log end, exclusive)."""
    return {p: stop for p, (_, stop) in offset_ranges(bootstrap, topic).items()}


Ranges = dict[int, tuple[int, int]]


def log_snapshot(bootstrap: str, topics: tuple[str, ...]) -> dict[str, Ranges]:
    """``[beginning, end)`` now per partition of each topic; a topic never created has no partitions."""
    from streams.topics import topic_partitions

    return {topic: offset_ranges(bootstrap, topic) if topic_partitions(bootstrap, topic) else {} for topic in topics}


def plan_from(snapshot: dict[str, Ranges], committed: dict[tuple[str, int], int]) -> dict[str, Ranges]:
    """The one offset planner of every job (backfill, stream, training replay): each partition
    from its committed offset, or else from its log *beginning*, which retention moves past 0,
    to the snapshot's end. A committed offset below the beginning means records were deleted
    before the job read them: the features would silently miss them, so the plan is refused."""
    for topic, ranges in snapshot.items():
        for partition, (begin, _) in ranges.items():
            resume = committed.get((topic, partition), begin)
            if resume < begin:
                raise KapparecError(
                    f"{topic}/{partition}: {begin - resume} records were deleted from the log (retention) before "
                    f"this job read them (committed offset {resume}, log start {begin}); run `kapparec backfill` "
                    f"to rebuild from what the log holds"
                )
    return {
        topic: {p: (committed.get((topic, p), begin), end) for p, (begin, end) in ranges.items()}
        for topic, ranges in snapshot.items()
    }
