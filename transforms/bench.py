"""Benchmarks of the feature jobs, each on a private broker and Redis it starts and stops.

- ``backfill_benchmark``: events/s of a backfill beside the raw kafka-python consume rate
  of the same topic measured in the same run (the ceiling no Python reader beats).
- ``freshness_benchmark``: produce-to-readable-in-Redis latency of the continuous job.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from featurestore import layout
from featurestore.definitions import Feature
from infra.services import ManagedService, broker_spec, free_port, redis_spec
from streams import offsets, topics
from streams.producer import LogProducer
from streams.schema import InteractionEvent, encode
from streams.source import DEFAULT_CONSUMER_CONFIG
from streams.synthetic import SyntheticLog, send_synthetic


@dataclass(frozen=True)
class PrivateStack:
    bootstrap: str
    redis_url: str


@contextlib.contextmanager
def private_stack() -> Iterator[PrivateStack]:
    """A broker and Redis of the benchmark's own, so it never touches the user's log."""
    with tempfile.TemporaryDirectory(prefix="kapparec-bench-") as run_dir:
        services = [
            ManagedService(broker_spec(free_port()), Path(run_dir)),
            ManagedService(redis_spec(free_port(), Path(run_dir)), Path(run_dir)),
        ]
        try:
            for service in services:
                service.start()
            broker, redis_service = services
            yield PrivateStack(f"127.0.0.1:{broker.spec.port}", f"redis://127.0.0.1:{redis_service.spec.port}/0")
        finally:
            for service in services:
                service.stop()


def produce_log(stack: PrivateStack, log: SyntheticLog, partitions: int) -> None:
    topics.ensure_topics(stack.bootstrap, partitions=partitions)
    with LogProducer(stack.bootstrap) as producer:
        send_synthetic(log, producer)


def raw_consume_rate(bootstrap: str, topic: str) -> tuple[int, float]:
    """Records/s of kafka-python alone reading the whole topic: no parsing, no Beam.

    With the source's own consumer settings (CRC checks off, large fetches), so the ceiling
    is the best this client does here, not a slower default.
    """
    ends = offsets.end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **DEFAULT_CONSUMER_CONFIG)
    partitions = [TopicPartition(topic, p) for p in ends]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    total, target = 0, sum(ends.values())
    started = time.perf_counter()
    while total < target:
        for records in consumer.poll(timeout_ms=1000).values():
            total += len(records)
    seconds = time.perf_counter() - started
    consumer.close()
    return total, total / seconds


def backfill_benchmark(events: int = 1_000_000, users: int = 20_000, items: int = 5_000,
                       partitions: int = 4, seed: int = 0, runner_args: tuple[str, ...] = ()) -> dict:
    from transforms.jobs import RunnerSettings, backfill

    log = SyntheticLog(users=users, items=items, events=events, seed=seed)
    with private_stack() as stack:
        produce_log(stack, log, partitions)
        read, ceiling = raw_consume_rate(stack.bootstrap, topics.EVENTS)
        _, stats = backfill(stack.bootstrap, stack.redis_url, runner=RunnerSettings(pipeline_args=runner_args),
                            progress=False)
    events_per_s = events / stats.seconds
    return {
        "events": events,
        "records_read": read,
        "seconds": round(stats.seconds, 2),
        "events_per_s": round(events_per_s),
        "ceiling_events_per_s": round(ceiling),
        "ratio": round(events_per_s / ceiling, 3),
        "runner": "DirectRunner " + " ".join(runner_args),
    }


def freshness_benchmark(n: int = 250, rate_per_s: float = 20.0, seed: int = 0) -> dict:
    """Send ``n`` events at a steady rate while ``stream`` runs; time each until Redis shows it."""
    from transforms.jobs import stream

    with private_stack() as stack:
        produce_log(stack, SyntheticLog(users=200, items=200, events=5_000, seed=seed), partitions=4)
        stop = threading.Event()
        worker = threading.Thread(target=stream, args=(stack.bootstrap, stack.redis_url),
                                  kwargs={"stop": stop, "poll_interval_s": 0.05}, daemon=True)
        worker.start()
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        _wait_until_caught_up(client, stack.bootstrap)
        latencies = _timed_events(client, stack.bootstrap, n, rate_per_s)
        stop.set()
        worker.join(timeout=60)
    ms = np.array(latencies) * 1000
    return {
        "n": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "rate_per_s": rate_per_s,
    }


def _wait_until_caught_up(client: redis.Redis, bootstrap: str, timeout_s: float = 300) -> None:
    target = sum(offsets.end_offsets(bootstrap, topics.EVENTS).values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        version = client.get(layout.CURRENT)
        if version:
            done = client.hgetall(layout.offsets_key(version))
            if sum(int(v) for f, v in done.items() if f.startswith(f"{topics.EVENTS}/")) >= target:
                return
        time.sleep(0.2)
    raise TimeoutError("the continuous job did not catch up with the initial log")


def _timed_events(client: redis.Redis, bootstrap: str, n: int, rate_per_s: float) -> list[float]:
    """Produce one event per fresh user; that user's history key appearing means the event is readable."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    sent: dict[str, float] = {}
    latencies: list[float] = []
    base_ms = int(time.time() * 1000)
    next_send, produced = time.perf_counter(), 0
    deadline = None
    while produced < n or (sent and time.monotonic() < deadline):
        if produced < n and time.perf_counter() >= next_send:
            user = f"fresh-{produced}"
            event = InteractionEvent(user_id=user, item_id="i1", event_type="play", event_time=base_ms + produced)
            sent[user] = time.perf_counter()
            producer.send(topics.EVENTS, key=user.encode(), value=encode(event))
            producer.flush()
            produced += 1
            next_send += 1.0 / rate_per_s
            if produced == n:
                deadline = time.monotonic() + 60
        _collect_visible(client, sent, latencies)
        time.sleep(0.005)
    producer.close()
    return latencies


def _collect_visible(client: redis.Redis, sent: dict[str, float], latencies: list[float]) -> None:
    version = client.get(layout.CURRENT)
    if not sent or not version:
        return
    users = list(sent)
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.exists(layout.feature_key(version, Feature.HISTORY, user))
    now = time.perf_counter()
    for user, exists in zip(users, pipe.execute()):
        if exists:
            latencies.append(now - sent.pop(user))
