"""``LogProducer``: the one way kapparec writes to the log (keyed, batched, compressed, acks=all).

Delivery failures are never swallowed: the first one is kept and raised as a ``KapparecError``
by the next ``send`` or by ``flush``/``close``, so a producer run either lands every record or
says it did not.
"""

from __future__ import annotations

from types import TracebackType

from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pydantic import BaseModel
from tqdm import tqdm

from kapparec.errors import KapparecError
from streams.schema import CatalogEvent, InteractionEvent, encode
from streams.topics import EVENTS, ITEMS, client_timeouts, unreachable

# Throughput settings. kafka-python's per-record Python work dominates a producer's CPU: lz4
# shrinks the requests at almost no CPU (gzip saves little more and costs more), and a 64 KiB
# batch with 20 ms linger fills real batches, where bigger ones gained nothing more.
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
            # Idempotent: a retry after a broker restart or a lost acknowledgement never writes a
            # record twice (the broker drops a batch whose producer sequence it already has).
            # Explicit, so an override that conflicts with it raises instead of silently turning it off.
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                           client_id="kapparec-producer", **config)
        except (KafkaConnectionError, KafkaTimeoutError):
            raise unreachable(bootstrap) from None
        self._bootstrap = bootstrap
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
        self._send(topic, key_bytes, value, timestamp_ms, headers)
        self.sent += 1
        self._bar.update(1)

    def _send(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None,
              headers: list[tuple[str, bytes]] | None) -> None:
        # Kafka's default partitioner (murmur2 of the key, as the Java client) keeps one user's events in order.
        try:
            future = self._producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms, headers=headers)
        except KafkaTimeoutError:
            raise KapparecError(f"Kafka at {self._bootstrap} did not take a record for {topic!r} "
                                f"within {MAX_BLOCK_MS} ms (broker down or topic missing?)") from None
        future.add_errback(self._remember_failure, topic)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged; raise if any was not, or if that
        takes longer than ``timeout_s`` (None: as long as the delivery timeout lets it)."""
        try:
            self._producer.flush(timeout=timeout_s)
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
