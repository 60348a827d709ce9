"""What the fault tests share (``make faults``): paced load beside a fault, the stream job as a
process, the log read back whole, and recovery times.

Each fault test runs the real broker, Redis, ``kapparec stream`` and ``kapparec serve``, hurts one
of them, and checks the same three things afterwards: the store equals a clean backfill's of the
same log (nothing lost or counted twice), every acknowledged record is in the log exactly once,
and every error a user saw was one line. Load is paced (offered at a fixed rate, far below what
the server or broker takes), so a failure is the fault's doing, not an overload's.
"""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from kafka import KafkaConsumer, TopicPartition

from featurestore.redis_store import RedisFeatureStore
from kapparec.threads import Beside
from streams import offsets
from streams.producer import LogProducer
from streams.topics import EVENTS
from transforms.jobs import READ_TOPICS, backfill
from tests.serving_helpers import KAPPAREC

POLL_S = 0.05


def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "the condition") -> float:
    """Waits until ``condition()`` holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what} did not hold within {timeout_s} s"
        time.sleep(POLL_S)
    return time.monotonic() - started


# Where a run's figures go (pytest shows a passing test's prints only with -s).
FIGURES_FILE = Path(os.environ.get("KAPPAREC_ARTIFACTS") or Path(__file__).parent.parent / "test-artifacts") / "faults" / "figures.txt"


def report(line: str) -> None:
    """A measured figure with the machine's load (it is shared), printed and appended to FIGURES_FILE."""
    line = f"{line} load_1m={os.getloadavg()[0]:.1f}"
    print(line)
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as figures:
        figures.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")


def report_recovery(fault: str, what: str, seconds: float) -> None:
    report(f"recovery fault={fault} what={what!r} seconds={seconds:.2f}")


def events_committed(store: RedisFeatureStore) -> int:
    version = store.current_version()
    return sum(o for (t, _), o in store.offsets(version).items() if t == EVENTS) if version else 0


def dump(redis_url: str, version: str | None = None) -> list[str]:
    store = RedisFeatureStore(redis_url)
    return list(store.dump(version or store.require_current_version()))


def assert_equals_a_clean_backfill(bootstrap: str, redis_url: str) -> None:
    """Nothing lost or counted twice: the current version equals a fresh replay of the same log."""
    kept = dump(redis_url)
    version, _ = backfill(bootstrap, redis_url, progress=False)
    assert kept == dump(redis_url, version), "the store differs from a clean backfill of the same log"


def read_log(bootstrap: str, topic: str = EVENTS) -> list:
    """Every record ``topic`` holds now (kafka-python ``ConsumerRecord``s), partition by partition."""
    held = []
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for partition, (start, stop) in offsets.offset_ranges(bootstrap, topic).items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            while consumer.position(tp) < stop:
                held += [r for r in consumer.poll(timeout_ms=500).get(tp, []) if r.offset < stop]
    finally:
        consumer.close()
    return held


def log_values(bootstrap: str, topic: str = EVENTS) -> Counter[bytes]:
    """Every value ``topic`` holds now, counted (a value logged twice counts 2)."""
    return Counter(record.value for record in read_log(bootstrap, topic))


def assert_acknowledged_exactly_once(held: Counter[bytes], acknowledged: list[bytes], unsure: list[bytes] = ()) -> None:
    """Every acknowledged value is in the log as often as it was sent, and one whose send failed
    (the client cannot know whether it landed) at most once."""
    sent = Counter(acknowledged)
    assert not [v for v, n in sent.items() if held[v] != n], "acknowledged records missing or duplicated in the log"
    assert not [v for v in unsure if held[v] - sent[v] > 1], "a record whose send failed is in the log twice"


@dataclass
class Outcome:
    at: float  # time.monotonic() when the call returned
    ok: bool
    value: object  # the result, or (status name, details) of a failure


class Paced(threading.Thread):
    """Calls ``call(n)`` ``rate`` times a second, from the block's start to its end, keeping each outcome.

    Offered at a fixed rate rather than back to back: a call that waits out a fault does not
    speed up the next ones, and the load stays far below the service's capacity. A call that
    raises ``grpc.RpcError`` is a failure kept with its status and details; any other exception
    (a failed assertion on the answer) ends the test."""

    def __init__(self, rate: float, call: Callable[[int], object]):
        super().__init__(daemon=True)
        self.rate, self.call = rate, call
        self.outcomes: list[Outcome] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        started, n = time.monotonic(), 0
        try:
            while not self._halt.is_set():
                try:
                    self.outcomes.append(Outcome(time.monotonic(), True, self.call(n)))
                except grpc.RpcError as failure:
                    self.outcomes.append(Outcome(time.monotonic(), False, (failure.code().name, failure.details() or "")))
                n += 1
                self._halt.wait(max(0.0, started + n / self.rate - time.monotonic()))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread by __exit__
            self.error = error

    def __enter__(self) -> "Paced":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._halt.set()
        self.join()
        if self.error is not None:
            raise self.error

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def seconds_until(self, moment: float, wanted: Callable[[Outcome], bool] = lambda outcome: outcome.ok,
                      timeout_s: float = 60) -> float:
        """Seconds from ``moment`` to the first outcome after it that is ``wanted`` (waits for it)."""
        def found() -> Outcome | None:
            if self.error is not None:
                raise self.error
            return next((o for o in self.outcomes if o.at > moment and wanted(o)), None)

        wait_for(lambda: found() is not None, timeout_s, "the wanted outcome")
        return found().at - moment


def assert_one_line(details: list[str]) -> None:
    assert all(text and "\n" not in text.strip() for text in details), details


class PacedProducer(threading.Thread):
    """Sends ``records`` (synthetic ``LogRecord``) to ``events`` at ``rate`` a second in chunks
    of a tenth of a second, flushing each; keeps the values the broker acknowledged, and those of
    a chunk whose flush failed (then goes on with a new producer, as a user's would)."""

    CHUNK_S = 0.1

    def __init__(self, bootstrap: str, records: list, rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.rate = bootstrap, records, rate
        self.acknowledged: list[bytes] = []
        self.acknowledged_at: list[float] = []  # when each chunk was acknowledged
        self.sent_at: dict[bytes, float] = {}  # when each value was handed to the producer
        self.unsure: list[bytes] = []
        self.failures: list[str] = []

    def run(self) -> None:
        chunk = max(1, int(self.rate * self.CHUNK_S))
        started = time.monotonic()
        producer = LogProducer(self.bootstrap)
        try:
            for n, first in enumerate(range(0, len(self.records), chunk)):
                values = [self._send(producer, record) for record in self.records[first:first + chunk]]
                try:
                    producer.flush()
                except Exception as failure:  # noqa: BLE001 - a KapparecError from flush; kept, one line
                    self.failures.append(str(failure))
                    self.unsure += values
                    producer.close()
                    producer = LogProducer(self.bootstrap)
                    continue
                self.acknowledged += values
                self.acknowledged_at.append(time.monotonic())
                time.sleep(max(0.0, started + (n + 1) * self.CHUNK_S - time.monotonic()))
        finally:
            try:
                producer.close()
            except Exception as failure:  # noqa: BLE001 - nothing was pending; kept for the test
                self.failures.append(str(failure))

    def _send(self, producer: LogProducer, record) -> bytes:
        self.sent_at[record.value] = time.monotonic()
        producer.send_raw(EVENTS, record.key, record.value, record.timestamp_ms)
        return record.value


class StreamJob:
    """``kapparec stream`` as its own process, with the line it ends with kept."""

    def __init__(self, bootstrap: str, redis_url: str, log_dir: Path, *flags: str):
        self.env = env = {**os.environ, "KAPPAREC_BOOTSTRAP": bootstrap, "KAPPAREC_REDIS_URL": redis_url}
        self.stderr_path = log_dir / f"stream-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen([KAPPAREC, "stream", *flags], env=env, stdout=subprocess.DEVNULL,
                                            stderr=stderr, stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM: the job ends at a commit boundary and hands its lease back."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def errors(self) -> list[str]:
        """What the job said on stderr, line by line, without its library log lines."""
        return [line for line in self.stderr_path.read_text().splitlines() if line.startswith("kapparec:")]


@dataclass
class LiveSystem:
    """A log, a store backfilled from it, ``kapparec serve`` (no model: trending and popular pages)
    and ``kapparec stream`` following the log: what a fault hits while it is streaming and serving."""

    server: object  # tests.serving_helpers.Server
    stream: StreamJob
    store: RedisFeatureStore
    bootstrap: str
    log: object  # the SyntheticLog
    users: list[str]
    later: list  # the synthetic records not yet produced, for the test to send while the fault happens

    def recommend(self, n: int):
        from kapparec.v1 import recommender_pb2 as pb

        response = self.stub.Recommend(pb.RecommendRequest(user_id=self.users[n % len(self.users)], k=10), timeout=10)
        assert response.items, "an empty page"
        return response.served_from

    def finish(self) -> int:
        """Serving stopped (its last impressions go out as it ends), the job caught up with every topic
        and then stopped; the job's exit code."""
        self.server.stop()
        if self.stream.running():
            wait_for(lambda: caught_up(self.bootstrap, self.store), 120, "the stream job catching up with the log")
        return self.stream.stop()

    def stop(self) -> None:
        """Whatever still runs, stopped (after a failure)."""
        self.server.stop()
        self.stream.stop()

    @property
    def stub(self):
        stub = getattr(self, "_stub", None)
        if stub is None:
            stub = self._stub = self.server.stub()
        return stub


# The default lease term (10 s) outlasts a Redis restart: a lease that expired while Redis was away
# would end the job at its next commit.
STREAM_FLAGS = ("--wait", "--poll-interval", "0.1")


def start_live_system(stack, tmp_path: Path, events: int = 4000, first: int = 1000) -> LiveSystem:
    """The first ``first`` of ``events`` synthetic events logged and backfilled, the rest left to the test."""
    from streams.synthetic import SyntheticLog
    from tests.logs import produce_synthetic
    from tests.serving_helpers import start_server

    log = SyntheticLog(users=60, items=80, events=events, seed=20)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:first])
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    server = start_server(stack.bootstrap, stack.redis_url, tmp_path / "models", tmp_path)
    stream = StreamJob(stack.bootstrap, stack.redis_url, tmp_path, *STREAM_FLAGS)
    users = [log.user_id(n) for n in range(log.users)]
    return LiveSystem(server, stream, RedisFeatureStore(stack.redis_url), stack.bootstrap, log, users, records[first:])


def log_end(bootstrap: str, topic: str = EVENTS) -> int:
    return sum(stop for _, stop in offsets.offset_ranges(bootstrap, topic).values())


def caught_up(bootstrap: str, store: RedisFeatureStore) -> bool:
    """The current version's committed offsets reach the ends of every topic the job reads."""
    committed = store.offsets(store.current_version())
    return all(committed.get((topic, p), 0) >= end
               for topic, ranges in offsets.log_snapshot(bootstrap, READ_TOPICS).items() for p, (_, end) in ranges.items())



class CommitClock(Beside):
    """Beside a stream job: when each partition's committed offset moved, sampled every ``interval_s``."""

    def __init__(self, store: RedisFeatureStore, interval_s: float = 0.02):
        super().__init__("commit-clock")
        self.store, self.interval_s = store, interval_s
        self.samples: dict[tuple[str, int], list[tuple[int, float]]] = {}  # position -> [(offset, first seen)]

    def run(self) -> None:
        while not self._done.wait(self.interval_s):
            version = self.store.current_version()
            seen_at = time.monotonic()
            for position, offset in (self.store.offsets(version) if version else {}).items():
                moves = self.samples.setdefault(position, [])
                if not moves or moves[-1][0] != offset:
                    moves.append((offset, seen_at))

    def committed_at(self, topic: str, partition: int, offset: int) -> float:
        """When the committed offset of (topic, partition) was first seen past ``offset``."""
        moves = self.samples.get((topic, partition), [])
        index = bisect.bisect_right([committed for committed, _ in moves], offset)
        assert index < len(moves), f"{topic}/{partition}@{offset} was never seen committed"
        return moves[index][1]
