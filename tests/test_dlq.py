"""WriteDeadLetters and read_dead_letters against the real test broker."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from streams import dlq
from streams.dlq import DeadLetter, WriteDeadLetters, read_dead_letters
from streams.topics import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, EVENTS, EVENTS_DLQ

LETTERS = [
    DeadLetter("bad_json: record: EOF", b'{"user_id": ', b"u1", EVENTS, 0, 17),
    DeadLetter("oversized: 20000 bytes > 16384", b"\xff" * 20_000, None, EVENTS, 3, 0),
    DeadLetter("missing: item_id: Field required", b"\x00\x01 not utf-8 \xfe", b"\xfe", "items", 1, 2**40),
]


def create_dlq(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(EVENTS_DLQ, 1, 1)])
    finally:
        admin.close()


def write(bootstrap: str, redis_url: str, letters: list[DeadLetter]) -> int:
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = pipeline | beam.Create(letters) | WriteDeadLetters(bootstrap, redis_url)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("dead_letters_written"))["counters"]
    return sum(c.committed for c in counters)


def test_dead_letters_round_trip_byte_for_byte(stack):
    create_dlq(stack.bootstrap)
    assert write(stack.bootstrap, stack.redis_url, LETTERS) == len(LETTERS)
    assert sorted(read_dead_letters(stack.bootstrap)) == sorted(LETTERS)


def test_dlq_record_is_the_original_value_and_key_with_reason_and_source_headers(stack):
    create_dlq(stack.bootstrap)
    write(stack.bootstrap, stack.redis_url, LETTERS[:1])
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None)
    tp = TopicPartition(EVENTS_DLQ, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    (record,) = consumer.poll(timeout_ms=5_000)[tp]
    consumer.close()
    assert (record.value, record.key) == (LETTERS[0].raw, LETTERS[0].key)
    assert dict(record.headers) == {
        DLQ_REASON_HEADER: LETTERS[0].reason.encode(),
        DLQ_SOURCE_HEADER: f"{EVENTS}/0@17".encode(),
    }


def test_read_dead_letters_of_an_empty_dlq_is_empty(stack):
    create_dlq(stack.bootstrap)
    assert read_dead_letters(stack.bootstrap) == []


def test_source_label_names_topic_partition_and_offset():
    assert LETTERS[2].source == "items/1@1099511627776"
    assert dlq._parse_source("my.topic-x/12@345") == ("my.topic-x", 12, 345)


def test_a_position_is_dead_lettered_once_however_often_it_is_written(stack):
    create_dlq(stack.bootstrap)
    assert write(stack.bootstrap, stack.redis_url, LETTERS[:2]) == 2
    assert write(stack.bootstrap, stack.redis_url, LETTERS) == 1  # a retry, or the next backfill
    assert sorted(read_dead_letters(stack.bootstrap)) == sorted(LETTERS)
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None)
    tp = TopicPartition(EVENTS_DLQ, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    records = consumer.poll(timeout_ms=5_000)[tp]
    consumer.close()
    assert len(records) == len(LETTERS)  # on the topic itself, not only in the reader's view
