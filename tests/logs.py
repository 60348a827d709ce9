"""Putting synthetic logs on the test broker."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaProducer

from streams import topics
from streams.synthetic import LogRecord, SyntheticLog


def produce_records(bootstrap: str, topic: str, records: Iterable[LogRecord]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    sent = 0
    for record in records:
        producer.send(topic, key=record.key, value=record.value, timestamp_ms=record.timestamp_ms)
        sent += 1
    producer.flush()
    producer.close()
    return sent


def produce_synthetic(
    bootstrap: str, log: SyntheticLog, records: list[LogRecord] | None = None, catalog: bool = True, partitions: int = 3
) -> None:
    """The catalog to ``items`` (first, as a real catalog service would), then interactions to ``events``."""
    topics.ensure_topics(bootstrap, partitions=partitions)
    if catalog:
        produce_records(bootstrap, topics.ITEMS, log.catalog_records())
    produce_records(bootstrap, topics.EVENTS, log.records() if records is None else records)
