"""The Kappa properties, end to end on the real broker and Redis.

A continuous run and a replay of the same log agree exactly; crashes of the continuous
job at random points do not change its result; bad records are dead-lettered, never lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from featurestore import layout
from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from streams import offsets
from streams.dlq import read_dead_letters
from streams.synthetic import SyntheticLog
from streams.topics import EVENTS_DLQ
from tests.faults import (PacedProducer, assert_acknowledged_exactly_once, assert_equals_a_clean_backfill, dump,
                          events_committed, log_values, report_recovery, wait_for)
from tests.logs import impression_records, produce_impressions, produce_synthetic
from transforms.jobs import backfill, stream

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))


def test_stream_then_backfill_agree_and_replays_are_identical(stack):
    log = SyntheticLog(users=60, items=80, events=1500, seed=7)
    produce_synthetic(stack.bootstrap, log)
    produce_impressions(stack.bootstrap, impression_records(log, malformed=False))

    # Small commits so the continuous run really is many merges, not one.
    batches = stream(stack.bootstrap, stack.redis_url, once=True, max_batch_records=120)
    assert batches.batches > 3
    streamed = dump(stack.redis_url)

    first_version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    replayed = dump(stack.redis_url, first_version)
    second_version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)

    assert len(streamed) > 100
    assert any('"key":"shown:' in line for line in streamed) and any('"key":"responded:' in line for line in streamed)
    assert streamed == replayed
    assert dump(stack.redis_url, second_version) == replayed


def test_backfill_switches_atomically_and_keeps_previous_for_rollback(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=30, events=400, seed=1))
    first, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    second, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    third, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    store = RedisFeatureStore(stack.redis_url)
    assert store.current_version() == third
    assert set(store.versions()) == {second, third}, "older versions are collected"
    assert store.rollback() == second
    assert FeatureReader(stack.redis_url).version == second


def test_stream_picks_up_new_events_and_resumes_from_committed_offsets(stack):
    log = SyntheticLog(users=30, items=40, events=1200, seed=3)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:700])
    stream(stack.bootstrap, stack.redis_url, once=True)
    store = RedisFeatureStore(stack.redis_url)
    version = store.require_current_version()
    assert sum(o for (t, _), o in store.offsets(version).items() if t == "events") == 700

    produce_synthetic(stack.bootstrap, log, records=records[700:], catalog=False)
    stream(stack.bootstrap, stack.redis_url, once=True)
    assert sum(o for (t, _), o in store.offsets(version).items() if t == "events") == 1200
    continued = dump(stack.redis_url)
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert continued == dump(stack.redis_url)


def test_bad_records_are_dead_lettered_with_reason_and_bytes(stack):
    log = SyntheticLog(users=40, items=50, events=2000, seed=11, malformed_share=0.02)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records)
    _, stats = backfill(stack.bootstrap, stack.redis_url, progress=False)

    bad = [r for r in records if not r.valid]
    assert len(bad) == log.malformed_count > 0
    assert stats.metrics["valid"] + stats.metrics["dead_lettered"] == stats.metrics["records_read"]
    letters = read_dead_letters(stack.bootstrap)
    assert len(letters) == stats.metrics["dead_lettered"] == len(bad)
    assert sorted(letter.raw for letter in letters) == sorted(r.value for r in bad)
    assert all(letter.reason for letter in letters)
    reasons = {letter.reason.split(":", 1)[0] for letter in letters}
    assert {"bad_json", "missing", "oversized", "future_event_time"} <= reasons

    backfill(stack.bootstrap, stack.redis_url, progress=False)  # the same bad records, read again
    stream(stack.bootstrap, stack.redis_url, once=True)
    assert sum(offsets.end_offsets(stack.bootstrap, EVENTS_DLQ).values()) == len(bad)  # each once on the topic


def test_late_records_are_counted_and_within_lateness_update_their_window(stack):
    from kafka import KafkaProducer

    from streams.schema import InteractionEvent, encode

    hour = 3_600_000
    base = 1_735_689_600_000  # 2025-01-01T00:00Z
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    from streams.topics import ensure_topics

    ensure_topics(stack.bootstrap, partitions=1)

    def send(item: str, at: int):
        event = InteractionEvent(user_id="u1", item_id=item, event_type="play", event_time=at)
        producer.send("events", key=b"u1", value=encode(event))

    send("fresh", base + 10 * hour)  # high water: 10h
    send("slightly_late", base + 7 * hour)  # 3h behind: within the default lateness
    send("too_late", base + 1 * hour)  # 9h behind: beyond it
    producer.flush()
    producer.close()
    backfill(stack.bootstrap, stack.redis_url, progress=False)

    reader = FeatureReader(stack.redis_url)
    assert reader.late_records() == 1
    trending = dict(reader.trending(n=10, half_life_hours=1e9))
    assert "slightly_late" in trending and "fresh" in trending
    assert "too_late" not in trending
    # Late for windows, but the user still did it: history keeps it.
    assert {e.item_id for e in reader.history("u1")} == {"fresh", "slightly_late", "too_late"}


@pytest.mark.parametrize("events, kills, alive_s, rate", [
    (1500, 2, (2.5, 4.0), 200),  # the short version, in the default suite
    pytest.param(48_000, 3, (3.0, 8.0), 2000, marks=pytest.mark.faults),
])
def test_killing_the_continuous_job_does_not_change_its_result(stack, events, kills, alive_s, rate):
    log = SyntheticLog(users=80, items=100, events=events, seed=5)
    produce_synthetic(stack.bootstrap, log, records=[])  # the catalog; the events arrive while jobs die
    env = {**os.environ, "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    # A killed job cannot hand its lease back: the next one waits out its short term.
    command = [KAPPAREC, "stream", "--max-batch-records", "120", "--poll-interval", "0.1", "--wait", "--lease-seconds", "1"]
    rng = random.Random(42)
    store = RedisFeatureStore(stack.redis_url)
    committed_at_kills = []
    producer = PacedProducer(stack.bootstrap, list(log.records()), rate)
    for kill in range(kills):
        before = events_committed(store)
        job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill == 0:
            # The events start once the first job holds the lease: a job slow to start on a loaded
            # machine would otherwise find the whole log there, and no kill would fall mid-log.
            wait_for(lambda: store.client.exists(layout.STREAM_LOCK) or job.poll() is not None, timeout_s=120)
            producer.start()
        # Killed at a random moment of its working life: how long a job takes to start depends
        # on the machine's load, so the clock starts at its first commit (or once the log it
        # found is all committed), not at its launch.
        took = wait_for(lambda: events_committed(store) > before or events_committed(store) == events
                        or job.poll() is not None, timeout_s=120)
        if kill:
            report_recovery("kill_9", "the next job commits", took)
        time.sleep(rng.uniform(0.0, alive_s[1] - alive_s[0]))
        job.send_signal(signal.SIGKILL)
        job.wait()
        committed_at_kills.append(events_committed(store))
    producer.join()
    restarted = time.monotonic()
    subprocess.run([*command, "--once"], env=env, check=True, capture_output=True)
    report_recovery("kill_9", "a restarted job committed the log", time.monotonic() - restarted)
    assert any(0 < committed < events for committed in committed_at_kills), committed_at_kills  # killed mid-log
    assert events_committed(store) == events
    assert producer.failures == []
    assert_acknowledged_exactly_once(log_values(stack.bootstrap), producer.acknowledged)
    assert_equals_a_clean_backfill(stack.bootstrap, stack.redis_url)


def test_stream_stops_on_request(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=10, items=10, events=200, seed=2))
    stop = threading.Event()
    seen = []

    def on_commit(version, records):
        seen.append(records)
        stop.set()

    worker = threading.Thread(target=stream, args=(stack.bootstrap, stack.redis_url), kwargs={"stop": stop, "on_commit": on_commit})
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert seen and seen[0] > 0


def test_the_running_stream_follows_a_published_backfill(stack):
    log = SyntheticLog(users=30, items=40, events=900, seed=4)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:500])
    store = RedisFeatureStore(stack.redis_url)
    stop = threading.Event()
    worker = threading.Thread(target=stream, args=(stack.bootstrap, stack.redis_url),
                              kwargs={"stop": stop, "poll_interval_s": 0.05})
    worker.start()
    try:
        wait_for(lambda: events_committed(store) == 500)
        streamed_version = store.require_current_version()
        backfilled, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
        assert backfilled != streamed_version
        produce_synthetic(stack.bootstrap, log, records=records[500:], catalog=False)
        # The same job, not restarted, now extends the backfilled version.
        wait_for(lambda: events_committed(store) == 900)
        assert store.require_current_version() == backfilled
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    followed = dump(stack.redis_url)
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert followed == dump(stack.redis_url)
