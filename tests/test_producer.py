"""LogProducer against the real broker: keyed sends land, raw bytes stay raw, failures surface."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition

from kapparec.errors import KapparecError
from streams.producer import LogProducer
from streams.schema import CatalogEvent, EventType, InteractionEvent, encode, parse_catalog, parse_interaction
from streams.topics import EVENTS, ITEMS, ensure_topics


def read_topic(bootstrap: str, topic: str) -> dict[int, list]:
    """Every record of ``topic`` per partition, read by explicit assignment (no group join)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: dict[int, list] = {tp.partition: [] for tp in partitions}
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                records[tp.partition].extend(batch)
        return records
    finally:
        consumer.close()


def interaction(user: str, item: str, at: int) -> InteractionEvent:
    return InteractionEvent(user_id=user, item_id=item, event_type=EventType.CLICK, event_time=at)


def test_keyed_sends_land_in_order(stack):
    ensure_topics(stack.bootstrap, partitions=4)
    sent = [interaction(f"u{n % 5}", f"i{n}", 1_000 + n) for n in range(40)]
    item = CatalogEvent(item_id="i1", title="One", created_at=5)
    with LogProducer(stack.bootstrap) as producer:
        for event in sent:
            producer.send_interaction(event, timestamp_ms=event.event_time)
        producer.send_catalog(item)
    assert producer.sent == 41

    by_partition = read_topic(stack.bootstrap, EVENTS)
    landed = [r for records in by_partition.values() for r in records]
    assert len(landed) == 40
    for partition, records in by_partition.items():
        for r in records:  # the key is the user id, and a user's events keep their order
            assert r.key.decode() == parse_interaction(r.value).user_id
        for user in {r.key for r in records}:
            times = [parse_interaction(r.value).event_time for r in records if r.key == user]
            assert times == sorted(times)
    users_per_partition = [{r.key for r in records} for records in by_partition.values()]
    assert sum(len(keys) for keys in users_per_partition) == 5  # each user on exactly one partition
    assert {r.timestamp for r in landed} == {e.event_time for e in sent}

    (catalog,) = read_topic(stack.bootstrap, ITEMS)[0]
    assert catalog.key == b"i1" and parse_catalog(catalog.value).title == "One"


def test_send_raw_keeps_bytes_and_headers(stack):
    ensure_topics(stack.bootstrap, partitions=1)
    garbage = b'{"user_id": 12, not json'
    with LogProducer(stack.bootstrap) as producer:
        producer.send_raw(EVENTS, "u1", garbage, headers=[("why", b"test")])
    (record,) = read_topic(stack.bootstrap, EVENTS)[0]
    assert record.value == garbage and record.key == b"u1"
    assert list(record.headers) == [("why", b"test")]


def test_delivery_failure_is_raised_not_swallowed(stack):
    ensure_topics(stack.bootstrap, partitions=1)
    # Closing also reports the failure, so leaving the block raises once more.
    with pytest.raises(KapparecError, match="delivery to 'events' failed"):
        with LogProducer(stack.bootstrap, delivery_timeout_ms=3000, request_timeout_ms=1000, linger_ms=0) as producer:
            producer.send_interaction(interaction("u1", "i1", 1))
            producer.flush()
            stack.broker.stop()
            producer.send_interaction(interaction("u1", "i2", 2))
            with pytest.raises(KapparecError, match="delivery to 'events' failed"):
                producer.flush()
            with pytest.raises(KapparecError):  # later sends refuse too: the run is already incomplete
                producer.send_interaction(interaction("u1", "i3", 3))


def test_unreachable_broker_is_one_clear_error():
    with pytest.raises(KapparecError, match="no Kafka broker reachable"):
        LogProducer("127.0.0.1:1")


def test_encoded_bytes_are_the_schema_encoding(stack):
    ensure_topics(stack.bootstrap, partitions=1)
    event = interaction("u9", "i9", 99)
    with LogProducer(stack.bootstrap) as producer:
        producer.send_interaction(event)
    (record,) = read_topic(stack.bootstrap, EVENTS)[0]
    assert record.value == encode(event)
