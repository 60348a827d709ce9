"""ensure_topics against the real broker: creates the four topics once, with the planned partitions."""

from __future__ import annotations

import time

import pytest

from kapparec.errors import KapparecError
from streams.topics import ALL_TOPICS, EVENTS, EVENTS_DLQ, IMPRESSIONS, ITEMS, ensure_topics, topic_partitions


def test_creates_all_topics_once(stack):
    assert sorted(ensure_topics(stack.bootstrap, partitions=3)) == sorted(ALL_TOPICS)
    assert ensure_topics(stack.bootstrap, partitions=3) == []


def test_partition_plan(stack):
    ensure_topics(stack.bootstrap, partitions=3)
    assert topic_partitions(stack.bootstrap, EVENTS) == [0, 1, 2]
    assert topic_partitions(stack.bootstrap, IMPRESSIONS) == [0, 1, 2]
    assert topic_partitions(stack.bootstrap, ITEMS) == [0]
    assert topic_partitions(stack.bootstrap, EVENTS_DLQ) == [0]


def test_partitions_default_from_settings(stack, monkeypatch):
    monkeypatch.setenv("KAPPAREC_PARTITIONS", "2")
    ensure_topics(stack.bootstrap)
    assert topic_partitions(stack.bootstrap, EVENTS) == [0, 1]


def test_missing_topic_has_no_partitions(stack):
    assert topic_partitions(stack.bootstrap, "no-such-topic") == []


def test_zero_partitions_refused(stack):
    with pytest.raises(KapparecError, match="at least one partition"):
        ensure_topics(stack.bootstrap, partitions=0)


def test_unreachable_broker_fails_fast():
    started = time.monotonic()
    with pytest.raises(KapparecError, match="no Kafka broker reachable at 127.0.0.1:1"):
        ensure_topics("127.0.0.1:1")
    print(f"unreachable broker reported after {time.monotonic() - started:.1f} s")
