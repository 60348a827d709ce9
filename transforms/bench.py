"""Benchmarks of the feature jobs, each on a private broker and Redis it starts and stops.

- ``backfill_benchmark``: events/s of a backfill beside the raw kafka-python consume rate
  of the same topic measured in the same run (the ceiling no Python reader beats), its peak
  RSS (the backfill runs in a spawned process, so the log's generation is not counted),
  Redis memory and the CPU each event costs the backfill process (``getrusage``), Redis
  (``INFO cpu``) and the broker (``/proc``) beside what it costs the raw consume; once for the
  synthetic log and once for a dense-session log.
- ``freshness_benchmark``: produce-to-readable-in-Redis latency of the continuous job, idle
  and under a background load, with the job's lag behind the log, beside produce-to-received
  of a bare consumer of the same log (what the broker and client alone take).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from featurestore import layout
from featurestore.reader import FeatureReader
from infra.private import PrivateStack, private_stack
from kapparec.cpu_budget import cpu_seconds, listening_pid
from kapparec.threads import Beside
from streams import offsets, topics
from streams.partition_read import DEFAULT_CONSUMER_CONFIG
from streams.producer import LogProducer
from streams.schema import InteractionEvent, encode
from streams.synthetic import SyntheticLog, send_synthetic
from transforms.pipeline import FOLLOW_CONSUMER_CONFIG, FOLLOW_POLL_TIMEOUT_MS


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


def run_isolated(function, *args, **kwargs) -> tuple[dict, float]:
    """``function(*args, **kwargs)`` (a JSON-able dict) in a fresh spawned process, and that
    process's peak RSS in MB: nothing this process holds (the generated log) is counted."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_with_peak_rss, (function, args, kwargs))


def _with_peak_rss(function, args: tuple, kwargs: dict) -> tuple[dict, float]:
    from kapparec.cli import quiet_library_logs

    quiet_library_logs()  # a spawned process starts without the command's logging settings
    result = function(*args, **kwargs)
    return result, peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that across
    exec, so a spawned child would report its parent's peak from before the fork."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def process_cpu_s() -> float:
    """User plus system CPU seconds of this process, every thread counted."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def timed_backfill(bootstrap: str, redis_url: str, runner_args: tuple[str, ...] = (), **options) -> dict:
    from transforms.jobs import RunnerSettings, backfill

    cpu_before = process_cpu_s()
    _, stats = backfill(bootstrap, redis_url, runner=RunnerSettings(pipeline_args=runner_args), progress=False,
                        **options)
    return {"seconds": stats.seconds, "commits": stats.batches, "cpu_s": process_cpu_s() - cpu_before}


def measure_backfill(log: SyntheticLog, partitions: int = 4, runner_args: tuple[str, ...] = ()) -> dict:
    """One log on a private stack: the backfill's rate, peak RSS, Redis memory and CPU per event
    beside the raw consume's."""
    with private_stack() as stack:
        produce_log(stack, log, partitions)
        consume_cpu_before = process_cpu_s()
        read, ceiling = raw_consume_rate(stack.bootstrap, topics.EVENTS)
        consume_cpu_s = process_cpu_s() - consume_cpu_before
        client = redis.Redis.from_url(stack.redis_url)
        broker_pid = listening_pid(int(stack.bootstrap.rsplit(":", 1)[1]))
        redis_before, broker_before = redis_cpu_s(client), cpu_seconds(broker_pid)
        timed, peak_rss_mb = run_isolated(timed_backfill, stack.bootstrap, stack.redis_url, runner_args)
        redis_used_s, broker_used_s = redis_cpu_s(client) - redis_before, cpu_seconds(broker_pid) - broker_before
        used = client.info("memory")["used_memory"]
    events_per_s = log.events / timed["seconds"]
    return {
        "events": log.events,
        "records_read": read,
        "seconds": round(timed["seconds"], 2),
        "events_per_s": round(events_per_s),
        "ceiling_events_per_s": round(ceiling),
        "ratio": round(events_per_s / ceiling, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "redis_used_memory_mb": round(used / 2**20, 1),
        "cpu_us_per_event": {"backfill_process": _per_event_us(timed["cpu_s"], log.events),
                             "redis": _per_event_us(redis_used_s, log.events),
                             "broker": _per_event_us(broker_used_s, log.events)},
        "ceiling_cpu_us_per_event": _per_event_us(consume_cpu_s, log.events),
    }


def _per_event_us(cpu_s: float, events: int) -> float:
    return round(1e6 * cpu_s / events, 2)


def dense_log(events: int, seed: int = 0) -> SyntheticLog:
    """Dense sessions like the third-party log of issue 9: 40 events per user within one day, 600 items."""
    return SyntheticLog(users=max(events // 40, 1), items=600, events=events, seed=seed, days=1)


def backfill_benchmark(events: int = 1_000_000, users: int = 20_000, items: int = 5_000,
                       partitions: int = 4, seed: int = 0, dense_events: int = 200_000,
                       runner_args: tuple[str, ...] = ()) -> dict:
    result = measure_backfill(SyntheticLog(users=users, items=items, events=events, seed=seed), partitions, runner_args)
    result["runner"] = "DirectRunner " + " ".join(runner_args)
    if dense_events:
        result["dense"] = measure_backfill(dense_log(dense_events, seed), partitions, runner_args)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


def freshness_benchmark(n: int = 250, rate_per_s: float = 20.0, load_per_s: float = 2_000.0, seed: int = 0) -> dict:
    """``n`` events at a steady rate while ``kapparec stream`` runs, timed until the reader shows them;
    then ``n`` more while a background producer adds ``load_per_s`` events/s. The ceiling: the same
    events timed until a bare consumer of the log receives them, before the job starts."""
    with private_stack() as stack:
        produce_log(stack, SyntheticLog(users=200, items=200, events=5_000, seed=seed), partitions=4)
        with _BareConsumer(stack.bootstrap) as consumer:
            ceiling = _timed_events(consumer.received, stack.bootstrap, n, rate_per_s, "bare")
        result = measure_freshness(stack, n, rate_per_s, load_per_s, seed)
    return {**result, "ceiling": {"n": len(ceiling), **_percentiles(ceiling), "latencies_ms": _milliseconds(ceiling)},
            "load_average_1m": round(os.getloadavg()[0], 2)}


def measure_freshness(stack: PrivateStack, n: int, rate_per_s: float, load_per_s: float, seed: int,
                      stream_args: tuple[str, ...] = (), env: dict[str, str] | None = None, tag: str = "") -> dict:
    """``kapparec stream [stream_args]`` on ``stack``: ``n`` events timed until readable, idle and
    under ``load_per_s`` events/s, with the job's lag behind the log."""
    with stream_process(stack, stream_args, env):
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        wait_until_caught_up(client, stack.bootstrap)
        reader = FeatureReader(stack.redis_url)
        visible = functools.partial(reader.history, n=1)
        # A log already committed (by a backfill) is caught up before the job runs: wait for it.
        _wait_until_live(visible, stack.bootstrap, f"live{tag}")
        idle = _timed_events(visible, stack.bootstrap, n, rate_per_s, f"idle{tag}")
        with BackgroundLoad(stack.bootstrap, load_per_s, seed) as load, _LagSampler(client, stack.bootstrap) as lag:
            loaded = _timed_events(visible, stack.bootstrap, n, rate_per_s, f"load{tag}")
    return {
        "n": len(idle),
        **_percentiles(idle),
        "latencies_ms": _milliseconds(idle),
        "rate_per_s": rate_per_s,
        "load": {
            "n": len(loaded),
            "events_per_s": round(load.events_per_s),
            **_percentiles(loaded),
            "latencies_ms": _milliseconds(loaded),
            "max_lag_records": lag.max_lag,
            "lag_first_half_max": lag.half_max(0),
            "lag_second_half_max": lag.half_max(1),
        },
    }


@contextlib.contextmanager
def stream_process(stack: PrivateStack, args: tuple[str, ...] = (), env: dict[str, str] | None = None
                   ) -> Iterator[None]:
    """``kapparec stream`` in a process of its own, as a user runs it (not sharing this one's GIL)."""
    env = {**os.environ, **(env or {}), "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    job = subprocess.Popen([str(Path(sys.executable).with_name("kapparec")), "stream", *args], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        job.terminate()
        job.wait(timeout=120)


def _percentiles(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} | {"max_ms": round(float(ms.max()), 1)}


def _milliseconds(latencies: list[float]) -> list[float]:
    """Every latency, for the report's distribution plot."""
    return [round(seconds * 1000, 1) for seconds in latencies]


class BackgroundLoad(Beside):
    """Produces synthetic events at ``rate_per_s`` until the block ends; measures the rate it reached."""

    def __init__(self, bootstrap: str, rate_per_s: float, seed: int):
        super().__init__()
        self._broker, self._rate = bootstrap, rate_per_s
        self._records = list(SyntheticLog(users=2_000, items=500, events=200_000, seed=seed + 1).records())
        self.events_per_s = 0.0

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self._broker, linger_ms=5, acks=1)
        started, sent, tick = time.perf_counter(), 0, 0.01
        while not self._done.is_set():
            due = int((time.perf_counter() - started) * self._rate)
            for record in self._records[sent % len(self._records):][: max(due - sent, 0)]:
                producer.send(topics.EVENTS, key=record.key, value=record.value, timestamp_ms=record.timestamp_ms)
                sent += 1
            time.sleep(tick)
        producer.flush()
        producer.close()
        self.events_per_s = sent / (time.perf_counter() - started)


class _LagSampler(Beside):
    """Every half second: records in the events log not yet committed by the continuous job."""

    def __init__(self, client: redis.Redis, bootstrap: str):
        super().__init__()
        self._client, self._broker = client, bootstrap
        self.samples: list[int] = []

    def run(self) -> None:
        while not self._done.wait(0.5):
            end = sum(offsets.end_offsets(self._broker, topics.EVENTS).values())
            self.samples.append(max(end - _committed_events(self._client), 0))

    @property
    def max_lag(self) -> int:
        return max(self.samples, default=0)

    def half_max(self, half: int) -> int:
        middle = len(self.samples) // 2
        return max((self.samples[:middle], self.samples[middle:])[half], default=0)


def _committed_events(client: redis.Redis) -> int:
    version = client.get(layout.CURRENT)
    if not version:
        return 0
    done = client.hgetall(layout.offsets_key(version))
    return sum(int(v) for f, v in done.items() if f.startswith(f"{topics.EVENTS}/"))


def wait_until_caught_up(client: redis.Redis, bootstrap: str, timeout_s: float = 300) -> None:
    target = sum(offsets.end_offsets(bootstrap, topics.EVENTS).values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _committed_events(client) >= target:
            return
        time.sleep(0.2)
    raise TimeoutError("the continuous job did not catch up with the initial log")


def _wait_until_live(visible: Callable[[str], object], bootstrap: str, user: str, timeout_s: float = 300) -> None:
    """Until one event produced now is readable: the continuous job is running and committing."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    event = InteractionEvent(user_id=user, item_id="i1", event_type="play", event_time=int(time.time() * 1000))
    producer.send(topics.EVENTS, key=user.encode(), value=encode(event))
    producer.close()
    deadline = time.monotonic() + timeout_s
    while not visible(user):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the continuous job committed nothing within {timeout_s:.0f} s")
        time.sleep(0.1)


class _BareConsumer(Beside):
    """kafka-python alone following the events topic: which users' events it has received."""

    def __init__(self, bootstrap: str):
        super().__init__()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       **{**DEFAULT_CONSUMER_CONFIG, **FOLLOW_CONSUMER_CONFIG})
        partitions = [TopicPartition(topics.EVENTS, p) for p in offsets.end_offsets(bootstrap, topics.EVENTS)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end()
        for partition in partitions:  # resolved now: a lazy seek could land after the first event
            self._consumer.position(partition)
        self._users: set[str] = set()

    def run(self) -> None:
        while not self._done.is_set():
            for records in self._consumer.poll(timeout_ms=FOLLOW_POLL_TIMEOUT_MS).values():
                self._users.update(record.key.decode() for record in records)
        self._consumer.close()

    def received(self, user: str) -> bool:
        return user in self._users


def _timed_events(visible: Callable[[str], object], bootstrap: str, n: int, rate_per_s: float,
                  tag: str) -> list[float]:
    """Produce one event per fresh user, timed until ``visible(user)`` is truthy (the reader showing
    that user's history: the event is readable)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    sent: dict[str, float] = {}
    latencies: list[float] = []
    base_ms = int(time.time() * 1000)
    next_send, produced = time.perf_counter(), 0
    deadline = None
    while produced < n or (sent and time.monotonic() < deadline):
        if produced < n and time.perf_counter() >= next_send:
            user = f"fresh-{tag}-{produced}"
            event = InteractionEvent(user_id=user, item_id="i1", event_type="play", event_time=base_ms + produced)
            sent[user] = time.perf_counter()
            producer.send(topics.EVENTS, key=user.encode(), value=encode(event))
            producer.flush()
            produced += 1
            next_send += 1.0 / rate_per_s
            if produced == n:
                deadline = time.monotonic() + 60
        for user in [user for user in sent if visible(user)]:
            latencies.append(time.perf_counter() - sent.pop(user))
        time.sleep(0.005)
    producer.close()
    return latencies
