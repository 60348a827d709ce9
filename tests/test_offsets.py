"""Offset snapshots against the real test broker."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from kapparec.errors import KapparecError
from streams import offsets, topics
from tests.logs import create_topic


def test_snapshot_of_an_empty_topic(stack):
    create_topic(stack.bootstrap, "t", 3)
    assert offsets.partitions_for(stack.bootstrap, "t") == [0, 1, 2]
    assert offsets.offset_ranges(stack.bootstrap, "t") == {0: (0, 0), 1: (0, 0), 2: (0, 0)}


def test_end_offsets_count_every_record_of_a_multi_record_batch(stack):
    create_topic(stack.bootstrap, "t", 2)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=50)
    producer.send("t", b"alone", partition=0)
    producer.flush()
    for i in range(5):  # one batch of five: brokers that list the batch base offset would say 2
        producer.send("t", b"batched %d" % i, partition=0)
    producer.send("t", b"other", partition=1)
    producer.flush()
    producer.close()
    assert offsets.end_offsets(stack.bootstrap, "t") == {0: 6, 1: 1}
    assert offsets.beginning_offsets(stack.bootstrap, "t") == {0: 0, 1: 0}


def test_missing_topic_fails_fast(stack):
    for lookup in (offsets.partitions_for, offsets.end_offsets, offsets.beginning_offsets, offsets.offset_ranges):
        with pytest.raises(KapparecError, match="'ghost' does not exist"):
            lookup(stack.bootstrap, "ghost")


def test_the_planner_starts_where_the_log_begins_not_at_zero():
    """The planning rule alone, on a snapshot; test_log_retention moves a real log start with DeleteRecords."""
    snapshot = {"events": {0: (500, 900), 1: (0, 40)}, "items": {0: (7, 7)}, "impressions": {}}
    assert offsets.plan_from(snapshot, {}) == {"events": {0: (500, 900), 1: (0, 40)}, "items": {0: (7, 7)},
                                               "impressions": {}}
    assert offsets.plan_from(snapshot, {("events", 0): 650})["events"] == {0: (650, 900), 1: (0, 40)}


def test_every_job_plans_with_the_one_planner(stack):
    from transforms.jobs import READ_TOPICS, plan_batch

    topics.ensure_topics(stack.bootstrap, partitions=2)
    snapshot = offsets.log_snapshot(stack.bootstrap, READ_TOPICS)
    assert set(snapshot) == set(READ_TOPICS) and all(len(ranges) >= 1 for ranges in snapshot.values())
    plan = plan_batch({**snapshot, "events": {0: (120, 300), 1: (0, 0)}}, {("events", 0): 150}, {})
    assert plan.events == {0: (150, 300)}  # a committed partition resumes, an empty one is left out
