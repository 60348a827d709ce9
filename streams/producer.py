"""``LogProducer``: the one way kapparec writes to the log (keyed, batched, compressed, acks=all).

Delivery failures are never swallowed: the first one is kept and raised as a ``KapparecError``
by the next ``send`` or by ``flush``/``close``, so a producer run either lands every record or
says it did not.
"""

from __future__ import annotations

import random
from types import TracebackType

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pydantic import BaseModel
from tqdm import tqdm

from kapparec.errors import KapparecError
from streams.schema import CatalogEvent, InteractionEvent, encode
from streams.topics import EVENTS, ITEMS, client_timeouts, unreachable

# Throughput settings, measured sending 50k synthetic events (~200 B each) to the local Tansu
# broker, in records per producer CPU-second (kafka-python's per-record Python work dominates):
#   none 16 KiB/0 ms 7.4k | none 64 KiB/20 ms 6.4k | gzip 64 KiB/20 ms 9.7k
#   lz4 16 KiB/0 ms 9.6k  | lz4 64 KiB/20 ms 10.7k | lz4 256 KiB/50 ms 10.7k
# lz4 shrinks the requests at almost no CPU (gzip saves little more and costs more CPU); a
# 64 KiB batch with 20 ms linger fills real batches, and bigger ones gain nothing more.
THROUGHPUT_CONFIG = {
    "compression_type": "lz4",
    "batch_size": 64 * 1024,
    "linger_ms": 20,
}

# How long send() may block waiting for metadata or buffer space before failing.
MAX_BLOCK_MS = 10_000


class LogProducer:
    """Sends events keyed by their entity (events by user, catalog by item) to their topics."""

    def __init__(self, bootstrap: str, *, progress: bool = False, total: int | None = None,
                 description: str = "records", **overrides):
        config = {**THROUGHPUT_CONFIG, **client_timeouts(), "max_block_ms": MAX_BLOCK_MS, **overrides}
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="kapparec-producer", **config)
        except (KafkaConnectionError, KafkaTimeoutError):
            raise unreachable(bootstrap) from None
        self._bootstrap = bootstrap
        self._partitions: dict[str, list[int]] = {}
        # The last record per (topic, partition), sent only at flush: see ``flush``.
        self._tails: dict[tuple[str, int], tuple] = {}
        self._failure: BaseException | None = None
        self._bar = tqdm(total=total, desc=description, unit="rec", unit_scale=True, disable=not progress)
        self.sent = 0

    def send_interaction(self, event: InteractionEvent, timestamp_ms: int | None = None) -> None:
        self.send_raw(EVENTS, event.user_id, encode(event), timestamp_ms)

    def send_catalog(self, event: CatalogEvent, timestamp_ms: int | None = None) -> None:
        self.send_raw(ITEMS, event.item_id, encode(event), timestamp_ms)

    def send_event(self, topic: str, key: str, event: BaseModel, timestamp_ms: int | None = None) -> None:
        self.send_raw(topic, key, encode(event), timestamp_ms)

    def send_raw(self, topic: str, key: str | bytes | None, value: bytes, timestamp_ms: int | None = None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send bytes as they are: malformed records, dead letters, anything already encoded."""
        self._raise_failure()
        key_bytes = key.encode() if isinstance(key, str) else key
        partition = self._partition_of(topic, key_bytes)
        held = self._tails.get((topic, partition))
        self._tails[(topic, partition)] = (key_bytes, value, timestamp_ms, headers)
        if held is not None:
            self._send(topic, partition, *held)
        self.sent += 1
        self._bar.update(1)

    def _partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition Kafka's default partitioner picks (murmur2 of the key, as the Java client)."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            try:
                partitions = self._partitions[topic] = sorted(self._producer.partitions_for(topic))
            except KafkaTimeoutError:
                raise KapparecError(f"Kafka at {self._bootstrap} has no topic {topic!r} "
                                    f"(or did not answer within {MAX_BLOCK_MS} ms)") from None
        if key is None:
            return random.choice(partitions)
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]

    def _send(self, topic: str, partition: int, key: bytes | None, value: bytes, timestamp_ms: int | None,
              headers: list[tuple[str, bytes]] | None) -> None:
        try:
            future = self._producer.send(topic, value=value, key=key, partition=partition,
                                         timestamp_ms=timestamp_ms, headers=headers)
        except KafkaTimeoutError:
            raise KapparecError(f"Kafka at {self._bootstrap} did not take a record for {topic!r} "
                                f"within {MAX_BLOCK_MS} ms (broker down or topic missing?)") from None
        future.add_errback(self._remember_failure, topic)

    def flush(self) -> None:
        """Wait until every record sent so far is acknowledged; raise if any was not.

        Each partition's last record goes out alone, after the rest is acknowledged, so the
        final batch of every partition holds one record. Why: Tansu 0.6 answers ListOffsets
        with the base offset of the last batch plus one, so a multi-record final batch would
        make standard clients see a log end short of what was written.
        """
        self._wait()
        for (topic, partition), record in self._tails.items():
            self._send(topic, partition, *record)
        self._tails.clear()
        self._wait()

    def _wait(self) -> None:
        try:
            self._producer.flush()
        except KafkaError as exc:
            self._remember_failure("the log", exc)
        self._raise_failure()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._bar.close()
            self._producer.close()

    def __enter__(self) -> "LogProducer":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        # Already failing: release the client without masking the original error.
        self._bar.close()
        self._producer.close(timeout=1)

    def _remember_failure(self, topic: str, error: BaseException) -> None:
        if self._failure is None:
            self._failure = KapparecError(f"delivery to {topic!r} failed: {error}")

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
