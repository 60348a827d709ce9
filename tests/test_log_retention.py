"""The topic settings a Kappa replay depends on, on the real Kafka broker: retention, compaction,
timestamps, a log start past 0, and the jobs' refusal of a log that deletes history."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition as RdTopicPartition
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from infra.kafka_broker import NODE_ID, broker_spec
from infra.services import ManagedService, free_port, redis_spec
from featurestore.redis_store import RedisFeatureStore
from kapparec.errors import KapparecError
from streams import offsets, topics
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog
from tests.conftest import Stack
from tests.logs import alter_topic, produce_synthetic
from transforms.config import FeatureConfig
from transforms.jobs import READ_TOPICS, backfill

KAPPAREC = Path(sys.executable).with_name("kapparec")


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    return topics.effective_configs(bootstrap, (topic,))[topic]


def run_cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    return subprocess.run([str(KAPPAREC), *args], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_topics_are_created_with_the_settings_a_replay_needs(stack):
    topics.ensure_topics(stack.bootstrap, partitions=2)
    events, items = topic_config(stack.bootstrap, topics.EVENTS), topic_config(stack.bootstrap, topics.ITEMS)
    impressions, dlq = topic_config(stack.bootstrap, topics.IMPRESSIONS), topic_config(stack.bootstrap, topics.EVENTS_DLQ)

    assert events["retention.ms"] == "-1" and events["retention.bytes"] == "-1"
    assert events["cleanup.policy"] == "delete" and events["message.timestamp.type"] == "CreateTime"
    assert items["cleanup.policy"] == "compact" and items["message.timestamp.type"] == "CreateTime"
    assert int(impressions["retention.ms"]) >= FeatureConfig().attribution_retention_ms
    assert dlq["message.timestamp.type"] == "LogAppendTime" and int(dlq["retention.ms"]) > 0
    assert topics.replay_hazards(stack.bootstrap, FeatureConfig().attribution_retention_ms) == []


def test_the_broker_creates_no_topic_a_client_asks_for(stack):
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(NODE_ID))],
                                           config_filter="all")
    finally:
        admin.close()
    (configs,) = described["broker"].values()
    assert configs["auto.create.topics.enable"]["value"] == "false"
    assert offsets.log_snapshot(stack.bootstrap, ("never-created",)) == {"never-created": {}}
    assert topics.topic_partitions(stack.bootstrap, "never-created") == []


@pytest.mark.parametrize(
    ("topic", "configs", "named"),
    [
        pytest.param(topics.EVENTS, {"retention.ms": "604800000"}, "retention.ms=604800000", id="stock 7 days"),
        pytest.param(topics.EVENTS, {"retention.bytes": "1073741824"}, "retention.bytes=1073741824", id="by size"),
        pytest.param(topics.ITEMS, {"cleanup.policy": "delete"}, "cleanup.policy=compact", id="items not compacted"),
        pytest.param(topics.IMPRESSIONS, {"retention.ms": "86400000"}, "retention.ms=86400000",
                     id="impressions shorter than attribution"),
    ],
)
def test_jobs_refuse_a_log_that_deletes_history_in_one_line(stack, topic, configs, named):
    topics.ensure_topics(stack.bootstrap, partitions=1)
    alter_topic(stack.bootstrap, topic, configs)

    for command in (["backfill"], ["stream", "--once"]):
        refused = run_cli(stack, *command)
        assert refused.returncode == 1, refused
        assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert named in refused.stderr and "--accept-log-retention" in refused.stderr

    accepted = run_cli(stack, "backfill", "--accept-log-retention")
    assert accepted.returncode == 0, accepted.stderr


def dump(redis_url: str) -> list[str]:
    store = RedisFeatureStore(redis_url)
    return list(store.dump(store.require_current_version()))


@pytest.fixture
def fresh_stack(tmp_path) -> Stack:
    """A broker and a Redis of this test's own.

    On the session's broker, after earlier tests had deleted and recreated every topic many times,
    its cleaner was seen not to compact the recreated ``items`` within two minutes while the same
    test passed on a new broker in seconds: compaction is the broker's own background work, and
    this test is about what a replay reads after it, not about the broker's history."""
    broker = ManagedService(broker_spec(free_port(), tmp_path), tmp_path)
    redis_service = ManagedService(redis_spec(free_port(), tmp_path), tmp_path)
    broker.start()
    redis_service.start()
    yield Stack(f"127.0.0.1:{broker.spec.port}", f"redis://127.0.0.1:{redis_service.spec.port}/0", broker, redis_service)
    broker.stop()
    redis_service.stop()


def test_a_compacted_catalog_replays_to_the_features_the_stream_saw(fresh_stack):
    """Compaction really removes earlier versions, and the replay of what is left equals the
    features of every version: each catalog feature is a function of an item's latest record."""
    stack = fresh_stack
    log = SyntheticLog(users=20, items=30, events=300, seed=5)
    topics.ensure_topics(stack.bootstrap, partitions=2)
    # A segment rolls once a record's timestamp is past its first one's by segment.ms, and the
    # cleaner takes any dirty share: compaction happens in seconds, not days.
    alter_topic(stack.bootstrap, topics.ITEMS, {"segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01"})
    produce_synthetic(stack.bootstrap, log, partitions=2)
    catalog = log.catalog()
    later = max(item.created_at for item in catalog)
    retitled = [item.model_copy(update={"title": f"{item.title} (v2)", "active": n < len(catalog)})
                for n, item in enumerate(catalog, start=1)]
    # The cleaner leaves the active segment alone: one record more closes the last version's.
    with LogProducer(stack.bootstrap) as producer:  # a second version of every item, the last one retired
        for n, item in enumerate([*retitled, catalog[0].model_copy(update={"title": "v3"})], start=1):
            producer.send_catalog(item, timestamp_ms=later + 2_000 * n)
            producer.flush()  # a batch is appended whole, so only a batch a record can roll a segment
    written = count_records(stack.bootstrap, topics.ITEMS)
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    every_version = dump(stack.redis_url)

    deadline = time.monotonic() + 120  # the cleaner wakes every 15 s when it found nothing to do
    while count_records(stack.bootstrap, topics.ITEMS) >= written and time.monotonic() < deadline:
        time.sleep(1)
    assert count_records(stack.bootstrap, topics.ITEMS) <= written - len(catalog), "the cleaner never compacted items"

    stack.redis().flushall()
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert dump(stack.redis_url) == every_version


def count_records(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets.partitions_for(bootstrap, topic)])
        consumer.seek_to_beginning()
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def delete_records_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, partition): offset})
    finally:
        admin.close()


def test_the_planner_starts_at_a_log_start_past_zero_and_librdkafka_agrees(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=10, items=10, events=400, seed=3), partitions=2)
    delete_records_before(stack.bootstrap, topics.EVENTS, 0, 50)

    snapshot = offsets.log_snapshot(stack.bootstrap, READ_TOPICS)
    plan = offsets.plan_from(snapshot, {})
    assert plan[topics.EVENTS][0][0] == 50 and plan[topics.EVENTS][1][0] == 0

    # A client that is not ours (librdkafka) reads the same beginning and end per partition.
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "kapparec-test-watermarks"})
    try:
        theirs = {p: consumer.get_watermark_offsets(RdTopicPartition(topics.EVENTS, p), timeout=10)
                  for p in snapshot[topics.EVENTS]}
    finally:
        consumer.close()
    assert theirs == {p: tuple(bounds) for p, bounds in snapshot[topics.EVENTS].items()}


def test_a_job_whose_committed_offset_fell_below_the_log_start_stops_saying_how_many_were_lost(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=10, items=10, events=300, seed=4), partitions=1)
    assert run_cli(stack, "stream", "--once").returncode == 0
    committed = offsets.end_offsets(stack.bootstrap, topics.EVENTS)[0]
    produce_synthetic(stack.bootstrap, SyntheticLog(users=10, items=10, events=100, seed=8), catalog=False,
                      partitions=1)
    delete_records_before(stack.bootstrap, topics.EVENTS, 0, committed + 40)

    stopped = run_cli(stack, "stream", "--once")

    assert stopped.returncode == 1, stopped
    assert "Traceback" not in stopped.stderr and stopped.stderr.count("\n") == 1, stopped.stderr
    assert "events/0: 40 records were deleted" in stopped.stderr


def test_the_planner_refuses_a_committed_offset_below_the_log_start():
    with pytest.raises(KapparecError, match="events/0: 30 records were deleted"):
        offsets.plan_from({"events": {0: (130, 200)}}, {("events", 0): 100})
