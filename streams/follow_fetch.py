"""One consumer fetching every followed partition of a reader at once, handed out per partition.

The followed read resumes each partition's restriction in turn, every round of the runner. A
consumer re-assigned and re-seeked per partition issues a fresh fetch per resume, and a fetch
still in flight when the read moves on is thrown away, so every round waited on fetches and a
record could wait several rounds for a fetch of its own partition to come back in time
(docs/reports/history.md has the figures). Assigned to all of them once, one fetch
brings whatever arrived on any partition, and a poll that waits returns as soon as anything
arrives.

What a poll brings for a partition whose restriction is not being read waits in a buffer
until that restriction resumes; the partition is paused meanwhile, so a buffer holds at
most one fetch. A restriction that resumes elsewhere than where its partition's buffer
continues (a retried bundle, a split taken by the runner) seeks there and drops the buffer.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition


class SharedFetch:
    """Hands each partition its records in log order, from one consumer assigned to them all."""

    def __init__(self, consumer: KafkaConsumer, poll_timeout_ms: int):
        self._consumer = consumer
        self._poll_timeout_ms = poll_timeout_ms
        self._buffers: dict[TopicPartition, list] = {}
        # Per partition: where its buffer (then the consumer) continues, the offset after the
        # last record handed out, so the restriction that took them resumes exactly there.
        self._continues: dict[TopicPartition, int] = {}
        self._may_wait = True

    def start_round(self) -> None:
        """A new round over the partitions (a bundle): its first poll may wait for records."""
        self._may_wait = True

    def take(self, tp: TopicPartition, start: int) -> list[Any]:
        """The records of ``tp`` from ``start`` on that have arrived; empty when none has.

        Only the round's first poll waits (up to the poll timeout, ending as soon as records
        come), and only when nothing is buffered: the round's other takes collect what it
        and later fetches brought, so the round ends, and commits, right after the wait.
        """
        if self._continues.get(tp) != start:
            self._seek(tp, start)
        if not self._buffers[tp]:
            wait = self._may_wait and not any(self._buffers.values())
            self._poll(self._poll_timeout_ms if wait else 0)
        self._may_wait = False
        records, self._buffers[tp] = self._buffers[tp], []
        if records:
            self._continues[tp] = records[-1].offset + 1
            self._consumer.resume(tp)
        return records

    def _seek(self, tp: TopicPartition, start: int) -> None:
        if tp not in self._continues:
            self._consumer.assign([*self._continues, tp])
        self._consumer.resume(tp)
        self._consumer.seek(tp, start)
        self._buffers[tp] = []
        self._continues[tp] = start

    def _poll(self, timeout_ms: int) -> None:
        for tp, records in self._consumer.poll(timeout_ms=timeout_ms).items():
            self._buffers[tp].extend(records)
            # Nothing more for it until its restriction takes what it has: one fetch per buffer.
            self._consumer.pause(tp)
