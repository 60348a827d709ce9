"""LogEvents' way into the log: one ``LogProducer`` per serving process, bounded in how long it waits."""

from __future__ import annotations

import threading
from typing import NamedTuple

from kafka.errors import KafkaError

from kapparec.errors import KapparecError
from streams.producer import LogProducer
from streams.topics import EVENTS

# A call gives up on an unreachable broker after about this long (UNAVAILABLE), rather than hang.
DELIVERY_TIMEOUT_MS = 5_000


class LogUnavailable(KapparecError):
    """The broker did not take the events: UNAVAILABLE."""


class LoggedEvent(NamedTuple):
    """A validated interaction as the log's record: its key (the user) and its bytes."""

    user_id: str
    raw: bytes


class EventWriter:
    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._producer: LogProducer | None = None
        # One call's events at a time, so a failed delivery is reported to the call that sent it.
        self._lock = threading.Lock()

    def append(self, events: list[LoggedEvent]) -> None:
        """Append ``events`` and return once the broker acknowledged every one (acks=all)."""
        with self._lock:
            try:
                producer = self._producer or self._connect()
                for event in events:
                    producer.send_raw(EVENTS, event.user_id, event.raw)
                producer.flush()
            except (KapparecError, KafkaError) as exc:
                self.close()  # a fresh client next time: this one may hold failed state
                raise LogUnavailable(f"the log did not take the events: {str(exc).splitlines()[0]}") from None

    def _connect(self) -> LogProducer:
        self._producer = LogProducer(
            self.bootstrap, linger_ms=0, max_block_ms=DELIVERY_TIMEOUT_MS,
            request_timeout_ms=DELIVERY_TIMEOUT_MS // 2, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        )
        return self._producer

    def close(self) -> None:
        producer, self._producer = self._producer, None
        close_quietly(producer)  # if it fails, the caller reports the original error


def close_quietly(producer: LogProducer | None) -> None:
    """Close a producer that may already be failing, without raising a second error."""
    if producer is not None:
        try:
            producer.close()
        except (KapparecError, KafkaError):
            pass
