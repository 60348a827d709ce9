"""Putting synthetic logs on the test broker."""

from __future__ import annotations

import time

from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from streams import topics
from streams.producer import LogProducer
from streams.schema import ImpressionEvent, ShownItem, encode
from streams.synthetic import LogRecord, SyntheticLog, send_synthetic


def produce_synthetic(
    bootstrap: str, log: SyntheticLog, records: list[LogRecord] | None = None, catalog: bool = True, partitions: int = 3
) -> None:
    topics.ensure_topics(bootstrap, partitions=partitions)
    with LogProducer(bootstrap) as producer:
        send_synthetic(log, producer, records, catalog)


def empty_log(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Delete every topic but Kafka's internal ones and wait until the broker lists none: an empty
    log without a broker restart (KRaft deletes a topic at once, and a topic made again under the
    same name starts at offset 0)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kapparec-test-reset")
    try:
        deadline = time.monotonic() + timeout_s
        while ours := [topic for topic in admin.list_topics() if not topic.startswith("__")]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still listed after deletion: {ours}")
            admin.delete_topics(ours, raise_errors=False)
            time.sleep(0.05)
    finally:
        admin.close()


def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Sets ``configs`` on ``topic``, leaving its other settings as they are."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)], incremental=True)
    finally:
        admin.close()
    # The broker applies a change after the controller accepted it: wait until it is in force.
    deadline = time.monotonic() + 10
    while any(topics.effective_configs(bootstrap, (topic,))[topic].get(key) != value for key, value in configs.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {configs} not in force after 10 s")
        time.sleep(0.05)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A topic outside the four of ``ensure_topics``, for source-level tests."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def impression_records(log: SyntheticLog, malformed: bool = True) -> list[tuple[str, bytes, int]]:
    """The synthetic log's impression events as serving would have logged them on ``impressions``:
    (key, value, log time ms). Users alternate between two buckets; one record is malformed."""
    records = []
    for n, event in enumerate(log.interactions()):
        if event.event_type != "impression":
            continue
        shown = ImpressionEvent(request_id=f"r{n}", user_id=event.user_id, event_time=event.event_time,
                                bucket=f"exp/{'ab'[int(event.user_id[1:]) % 2]}",
                                items=(ShownItem(item_id=event.item_id, position=1 + n % 5, source="two_tower"),))
        records.append((event.user_id, encode(shown), event.event_time))
    if malformed and records:
        key, _, at = records[0]
        records.append((key, b'{"request_id": "broken"', at))
    return records


def produce_impressions(bootstrap: str, records: list[tuple[str, bytes, int]]) -> None:
    """Logs ``records`` on an ``impressions`` topic set to keep them all.

    The synthetic impressions carry the synthetic log's times (2025), far past the topic's 91-day
    retention, and the broker deletes records past it at its retention check, every 5 minutes at
    a moment no test chooses: a replay then found the impressions gone, or gone from under its
    read (OffsetOutOfRange). A fixed historical log needs a topic that keeps it."""
    alter_topic(bootstrap, topics.IMPRESSIONS, topics.KEEP_FOREVER)
    with LogProducer(bootstrap) as producer:
        for key, value, at in records:
            producer.send_raw(topics.IMPRESSIONS, key, value, at)


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes | None, bytes]]) -> list:
    """Sends ``(partition, key, value)`` records in order; returns their RecordMetadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        futures = [producer.send(topic, value=value, key=key, partition=p) for p, key, value in records]
        producer.flush()
        return [f.get() for f in futures]
    finally:
        producer.close()
