"""Impressions, written to the ``impressions`` topic off the request path, through librdkafka.

A request hands its impression, already encoded, to a confluent-kafka producer: ``produce`` only
puts the record on librdkafka's bounded queue, and librdkafka's own threads batch, compress and
send it without the GIL. A full queue or a broker that does not acknowledge a record in time
drops impressions and counts them (``kapparec_impressions_dropped``): an impression is
analytics, and a request must never wait for or fail on it.

Why not ``streams.producer.LogProducer`` (kafka-python) like every other writer: its per-record
work and its sender thread are Python, so under load they take the GIL from the requests, and
that shows in a Recommend's CPU and in its tail latency (``kapparec bench serving`` measures
each Recommend with its impression). The other writers send in bulk, off any request path,
where kafka-python's cost is throughput only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import NamedTuple

import confluent_kafka
import orjson

from serving import metrics
from streams.schema import SCHEMA_VERSION
from streams.topics import IMPRESSIONS

log = logging.getLogger("kapparec.serving")

QUEUE_CAPACITY = 10_000
# librdkafka gathers a partition's impressions this long before it sends them: few requests, and
# no Python runs for them however many there are.
LINGER_MS = 100
# A broker that does not take a record within this long costs that record, not a stuck queue.
SEND_TIMEOUT_MS = 2_000
# How often the delivery reports are served (and the dropped ones logged).
POLL_S = 0.5


class Impression(NamedTuple):
    user_id: str  # the record's key
    record: bytes  # the ``ImpressionEvent`` as the log holds it


def impression(request_id: str, user_id: str, event_time: int, bucket: str, model_version: str, served_from: str,
               items: Iterable[tuple[str, int, str]]) -> Impression:
    """The page's ``ImpressionEvent`` record, byte for byte what ``streams.schema.encode`` makes of it
    (a test holds them equal), without building a pydantic model per page and per item: those
    models were about 5% of a Recommend's CPU in a profile of a loaded worker. Its fields need no
    second validation: the user id passed ``limits.identifier`` (the log's id rule), the item ids
    are catalog ids the log validated, positions count from 1, and sources and buckets are the
    server's own names.

    ``items``: (item id, position, source) of each item shown.
    """
    event = {"schema_version": SCHEMA_VERSION, "request_id": request_id, "user_id": user_id, "event_time": event_time,
             "bucket": bucket, "model_version": model_version, "served_from": served_from,
             "items": [{"item_id": item, "position": position, "source": source} for item, position, source in items]}
    return Impression(user_id, orjson.dumps(event))


class ImpressionLog:
    def __init__(self, bootstrap: str, capacity: int = QUEUE_CAPACITY):
        self.bootstrap = bootstrap
        self._producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap,
            "client.id": "kapparec-impressions",
            # As ``LogProducer``: every replica has it, and a retry never writes it twice.
            "acks": "all",
            "enable.idempotence": True,
            # Java's partitioner, as kafka-python's: a user's impressions share the partition
            # every other client of the log would choose for that key.
            "partitioner": "murmur2_random",
            "compression.type": "lz4",
            "linger.ms": LINGER_MS,
            "message.timeout.ms": SEND_TIMEOUT_MS,
            "queue.buffering.max.messages": capacity,
            "on_delivery": self._delivered,
            "logger": logging.getLogger("kapparec.serving.librdkafka"),
        })
        self._failed: list[str] = []  # this poll's delivery errors, logged once per poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)

    def start(self) -> "ImpressionLog":
        self._thread.start()
        return self

    def offer(self, impression: Impression) -> None:
        """Queue ``impression`` for the log, or count it dropped; never blocks."""
        try:
            self._producer.produce(IMPRESSIONS, impression.record, impression.user_id)
        except BufferError:
            metrics.child(metrics.IMPRESSIONS_DROPPED, "queue_full").inc()

    def stop(self) -> None:
        """Send what is still queued (bounded by the send timeout); what is left then is dropped."""
        self._stop.set()
        self._thread.join()
        left = self._producer.flush(2 * SEND_TIMEOUT_MS / 1000)
        self._report_failures()
        if left:
            metrics.child(metrics.IMPRESSIONS_DROPPED, "broker").inc(left)
            log.warning("event=impressions_dropped count=%d reason='not acknowledged before shutdown'", left)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)
            self._report_failures()

    def _delivered(self, error: confluent_kafka.KafkaError | None, _message) -> None:
        if error is None:
            metrics.child(metrics.IMPRESSIONS_WRITTEN).inc()
            return
        metrics.child(metrics.IMPRESSIONS_DROPPED, "broker").inc()
        self._failed.append(error.str())

    def _report_failures(self) -> None:
        failed, self._failed = self._failed, []
        if failed:
            log.warning("event=impressions_dropped count=%d reason=%r", len(failed), failed[-1])
