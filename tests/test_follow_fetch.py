"""The followed read's shared fetch, against the real broker: one consumer, handed out per partition."""

from __future__ import annotations

import threading
import time

from kafka import KafkaConsumer, TopicPartition

from streams.follow_fetch import SharedFetch
from streams.partition_read import DEFAULT_CONSUMER_CONFIG
from tests.logs import create_topic, produce

TOPIC = "fetch-shared"
WAIT_MS = 1_000


def shared_fetch(bootstrap: str, wait_ms: int = WAIT_MS) -> tuple[SharedFetch, KafkaConsumer]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="none",
                             **{**DEFAULT_CONSUMER_CONFIG, "fetch_max_wait_ms": 5})
    return SharedFetch(consumer, wait_ms), consumer


def values(records) -> list[bytes]:
    return [record.value for record in records]


def test_one_fetch_serves_every_partition_and_each_resumes_where_it_left_off(stack):
    create_topic(stack.bootstrap, TOPIC, 2)
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    fetch, consumer = shared_fetch(stack.bootstrap)
    try:
        assert fetch.take(p0, 0) == [] and fetch.take(p1, 0) == []  # both assigned, nothing there yet
        produce(stack.bootstrap, TOPIC, [(0, None, b"a0"), (1, None, b"b0"), (1, None, b"b1")])
        fetch.start_round()
        first = fetch.take(p0, 0)
        assert values(first) == [b"a0"]
        # Partition 1's records came with that fetch: its take hands them over, in order.
        assert values(fetch.take(p1, 0)) == [b"b0", b"b1"]
        produce(stack.bootstrap, TOPIC, [(0, None, b"a1")])
        fetch.start_round()
        assert [(r.offset, r.value) for r in fetch.take(p0, first[-1].offset + 1)] == [(1, b"a1")]
    finally:
        consumer.close()


def test_a_buffered_partition_is_paused_so_its_buffer_holds_one_fetch(stack):
    create_topic(stack.bootstrap, TOPIC, 2)
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    fetch, consumer = shared_fetch(stack.bootstrap)
    try:
        fetch.take(p1, 0)
        produce(stack.bootstrap, TOPIC, [(1, None, b"first")])
        fetch.start_round()
        fetch.take(p0, 0)  # waits, and brings partition 1's record into its buffer
        produce(stack.bootstrap, TOPIC, [(1, None, b"second")])
        for _ in range(5):  # rounds that never reach partition 1 poll on without fetching for it
            time.sleep(0.1)
            fetch.start_round()
            fetch.take(p0, 0)
        assert values(fetch.take(p1, 0)) == [b"first"]
        fetch.start_round()
        assert values(fetch.take(p1, 1)) == [b"second"]
    finally:
        consumer.close()


def test_a_restriction_resumed_elsewhere_seeks_there(stack):
    create_topic(stack.bootstrap, TOPIC, 1)
    p0 = TopicPartition(TOPIC, 0)
    produce(stack.bootstrap, TOPIC, [(0, None, b"r%d" % i) for i in range(4)])
    fetch, consumer = shared_fetch(stack.bootstrap)
    try:
        assert values(fetch.take(p0, 0)) == [b"r0", b"r1", b"r2", b"r3"]
        # A retried bundle's restriction starts again at offset 1: the records are read again from there.
        fetch.start_round()
        assert values(fetch.take(p0, 1)) == [b"r1", b"r2", b"r3"]
    finally:
        consumer.close()


def test_the_rounds_wait_ends_when_a_record_arrives(stack):
    create_topic(stack.bootstrap, TOPIC, 2)
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    produce(stack.bootstrap, TOPIC, [(0, None, b"early")])
    fetch, consumer = shared_fetch(stack.bootstrap, wait_ms=30_000)
    try:
        assert values(fetch.take(p0, 0)) == [b"early"]
        assert fetch.take(p1, 0) == []
        later = threading.Timer(0.3, produce, (stack.bootstrap, TOPIC, [(1, None, b"late")]))
        later.start()
        started = time.monotonic()
        fetch.start_round()
        assert fetch.take(p0, 1) == []  # the record is another partition's: the wait ended without it
        assert time.monotonic() - started < 20
        assert values(fetch.take(p1, 0)) == [b"late"]
        later.join()
    finally:
        consumer.close()
