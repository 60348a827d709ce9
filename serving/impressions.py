"""Impressions, written to the ``impressions`` topic off the request path.

A request only puts its impression, already encoded, on a bounded queue; one sender thread
drains the queue in batches into the log. A full queue or a broker that does not take a batch drops impressions
and counts them (``kapparec_impressions_dropped``): an impression is analytics, and a request
must never wait for or fail on it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from typing import NamedTuple

import orjson
from kafka.errors import KafkaError

from kapparec.errors import KapparecError
from serving import metrics
from serving.log_writer import close_quietly
from streams.producer import LogProducer
from streams.schema import SCHEMA_VERSION
from streams.topics import IMPRESSIONS

log = logging.getLogger("kapparec.serving")

QUEUE_CAPACITY = 10_000
BATCH_SIZE = 500
# How long the sender gathers impressions after the first one before it sends them. Every send
# ends with a flush (the log's acknowledgement, then each partition's last record alone: see
# ``LogProducer.flush``) that costs the process milliseconds of CPU, so sends are kept few: at
# 300 pages/s, a 50 ms linger that sent whatever had queued cost 1.6 ms of CPU per page.
LINGER_S = 0.5
# A broker that does not take a batch within this long costs that batch, not a stuck sender.
SEND_TIMEOUT_MS = 2_000
RECONNECT_PAUSE_S = 1.0


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
        self._queue: queue.Queue[Impression] = queue.Queue(maxsize=capacity)
        self._producer: LogProducer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)

    def start(self) -> "ImpressionLog":
        self._thread.start()
        return self

    def offer(self, impression: Impression) -> None:
        """Queue ``impression`` for the log, or count it dropped; never blocks."""
        try:
            self._queue.put_nowait(impression)
        except queue.Full:
            metrics.IMPRESSIONS_DROPPED.labels("queue_full").inc()

    def stop(self) -> None:
        """Send what is still queued (bounded by the send timeout), then close the producer."""
        self._stop.set()
        self._thread.join(SEND_TIMEOUT_MS / 1000 * 2)
        self._close()

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch and not self._send(batch):
                self._stop.wait(RECONNECT_PAUSE_S)

    def _next_batch(self) -> list[Impression]:
        """The impressions of ``LINGER_S`` from the first one (at most ``BATCH_SIZE``). The sender
        sleeps through the linger rather than waking for every impression a request queues."""
        try:
            batch = [self._queue.get(timeout=LINGER_S)]
        except queue.Empty:
            return []
        if self._queue.qsize() < BATCH_SIZE - 1:
            self._stop.wait(LINGER_S)
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[Impression]) -> bool:
        try:
            producer = self._producer or self._connect()
            for user_id, record in batch:
                producer.send_raw(IMPRESSIONS, user_id, record)
            # Bounded twice over: a sender stuck on a broker that neither answers nor fails
            # would drop every later impression unseen.
            producer.flush(timeout_s=2 * SEND_TIMEOUT_MS / 1000)
        except (KapparecError, KafkaError) as exc:
            metrics.IMPRESSIONS_DROPPED.labels("broker").inc(len(batch))
            log.warning("event=impressions_dropped count=%d reason=%r", len(batch), str(exc).splitlines()[0])
            self._close()
            return False
        metrics.IMPRESSIONS_WRITTEN.inc(len(batch))
        return True

    def _connect(self) -> LogProducer:
        self._producer = LogProducer(
            self.bootstrap, max_block_ms=SEND_TIMEOUT_MS, request_timeout_ms=SEND_TIMEOUT_MS // 2,
            delivery_timeout_ms=SEND_TIMEOUT_MS, linger_ms=5,
        )
        return self._producer

    def _close(self) -> None:
        producer, self._producer = self._producer, None
        close_quietly(producer)  # a batch it held is already counted as dropped
