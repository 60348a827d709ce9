"""WriteDeadLetters and read_dead_letters against the real test broker."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

import pytest

from featurestore import layout
from featurestore.definitions import Feature
from featurestore.redis_store import RedisFeatureStore
from streams import dlq, offsets, topics
from streams.dlq import DeadLetter, WriteDeadLetters, read_dead_letters
from streams.schema import InteractionEvent, encode
from streams.topics import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, EVENTS, EVENTS_DLQ
from tests.logs import produce
from transforms.config import FeatureConfig
from transforms.jobs import READ_TOPICS, RunnerSettings, plan_batch, run_bounded

BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00Z

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


def test_the_ledger_holds_one_mark_per_partition_however_many_letters_it_wrote(stack):
    create_dlq(stack.bootstrap)
    many = [DeadLetter("bad_json", b"{", None, EVENTS, partition, offset) for partition in (0, 1) for offset in range(50)]
    assert write(stack.bootstrap, stack.redis_url, many) == 100
    assert stack.redis().zrange(layout.DLQ_WRITTEN, 0, -1, withscores=True) == [(b"events/0", 50.0),
                                                                                 (b"events/1", 50.0)]


def test_a_failed_run_leaves_every_letter_below_its_committed_offsets_in_the_dlq(stack):
    """Offsets move mid-bundle (at each commit); the letters they cover must be durable by then."""
    topics.ensure_topics(stack.bootstrap, partitions=1)

    def event(user: str, n: int) -> bytes:
        return encode(InteractionEvent(user_id=user, item_id=f"i{n % 7}", event_type="play", event_time=BASE_MS + n))

    records = [(0, b"u1", b'{"user_id": ' if n % 10 == 3 else event(f"u{n % 5}", n)) for n in range(300)]
    records += [(0, b"doomed", event("doomed", 300 + n)) for n in range(20)]
    produce(stack.bootstrap, EVENTS, records)
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    # The doomed user's history is not a sorted set: the commit that brings their events is refused.
    stack.redis().set(layout.feature_key(version, Feature.HISTORY, "doomed"), "not a zset")
    plan = plan_batch(offsets.log_snapshot(stack.bootstrap, READ_TOPICS), {}, {})
    with pytest.raises(Exception, match="doomed"):
        run_bounded(stack.bootstrap, store, version, plan, FeatureConfig(), RunnerSettings(), max_records=50)
    committed = store.offsets(version)[(EVENTS, 0)]
    assert committed > 100  # several commits landed before the refused one
    lettered = {letter.offset for letter in read_dead_letters(stack.bootstrap)}
    assert {n for n in range(committed) if n % 10 == 3} <= lettered
