"""Putting synthetic logs on the test broker."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic

from streams import topics
from streams.producer import LogProducer
from streams.synthetic import LogRecord, SyntheticLog, send_synthetic


def produce_synthetic(
    bootstrap: str, log: SyntheticLog, records: list[LogRecord] | None = None, catalog: bool = True, partitions: int = 3
) -> None:
    topics.ensure_topics(bootstrap, partitions=partitions)
    with LogProducer(bootstrap) as producer:
        send_synthetic(log, producer, records, catalog)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A topic outside the four of ``ensure_topics``, for source-level tests."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
