"""The dead-letter topic: records that broke the contract, kept byte for byte with the reason.

A record that fails validation is never dropped and never stops a pipeline: the source
emits a ``DeadLetter`` and ``WriteDeadLetters`` appends the untouched original bytes and
key to the DLQ topic, with the reason and the source position in headers, so the record
can be inspected, fixed and replayed.

The feature pipeline writes a bundle's letters before the offsets that cover them move
(``transforms.bundled``): a crash between the two leaves them to be read and written again,
never lost.

Every backfill and every retried bundle reads the same bad records again, so the writer keeps
a ledger for the store and appends a position only once. The ledger is one mark per source
partition (``layout.DLQ_WRITTEN``): the offset past the last letter written. That is enough,
and stays bounded by the partition count: a partition is read in order, and every job starts
it either at the log beginning or at a committed offset, below which every letter was written
before the offset moved; so every letter below a partition's mark is written, and a letter at
or past it is not yet. The mark moves after the broker acknowledged the letters below it: a
crash between the two can repeat those letters, never lose them, and ``read_dead_letters``
returns each position once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from featurestore import layout
from kapparec.errors import KapparecError
from streams import offsets
from streams.topics import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, EVENTS_DLQ

METRICS_NAMESPACE = "kapparec.dlq"
LETTERS_WRITTEN = "dead_letters_written"


class DeadLetter(NamedTuple):
    """A record that failed validation, with where it came from and why."""

    reason: str
    raw: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def _parse_source(source: str) -> tuple[str, int, int]:
    """``"topic/partition@offset"`` back into its parts."""
    topic, _, position = source.rpartition("/")
    partition, _, offset = position.partition("@")
    return topic, int(partition), int(offset)


class DeadLetterWriter:
    """Appends dead letters to the DLQ topic, each source position once for the store (the ledger
    in the Redis at ``ledger_url``)."""

    def __init__(self, bootstrap: str, ledger_url: str, topic: str = EVENTS_DLQ):
        # acks="all": a dead letter is the only copy of a bad record once the offset moves on.
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
        self._ledger = redis.Redis.from_url(ledger_url, decode_responses=True)
        self._topic = topic

    def write(self, letters: Iterable[DeadLetter]) -> int:
        """Appends the letters not written yet and returns how many, once the broker acknowledged
        them all and the ledger moved past them; a send error raises."""
        letters = list(letters)
        if not letters:
            return 0
        partitions = list({_partition_of(letter): None for letter in letters})
        marks = dict(zip(partitions, self._ledger.zmscore(layout.DLQ_WRITTEN, partitions)))
        new = [letter for letter in letters if letter.offset >= (marks[_partition_of(letter)] or 0)]
        pending = [self._send(letter) for letter in new]
        self._producer.flush()
        for future in pending:
            future.get()
        if new:
            passed: dict[str, int] = {}
            for letter in new:
                passed[_partition_of(letter)] = max(passed.get(_partition_of(letter), 0), letter.offset + 1)
            self._ledger.zadd(layout.DLQ_WRITTEN, passed, gt=True)  # GT: a mark only moves forward
        return len(new)

    def _send(self, letter: DeadLetter):
        headers = [(DLQ_REASON_HEADER, letter.reason.encode()), (DLQ_SOURCE_HEADER, letter.source.encode())]
        return self._producer.send(self._topic, value=letter.raw, key=letter.key, headers=headers)

    def close(self) -> None:
        self._producer.close()


def _partition_of(letter: DeadLetter) -> str:
    return layout.offset_field(letter.topic, letter.partition)


class _WriteDeadLettersFn(beam.DoFn):
    """Appends a bundle's dead letters as it finishes: the bundle finishes only once they are durable and recorded."""

    def __init__(self, bootstrap: str, topic: str, ledger_url: str):
        self._bootstrap = bootstrap
        self._topic = topic
        self._ledger_url = ledger_url
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, LETTERS_WRITTEN)

    def setup(self) -> None:
        self._writer = DeadLetterWriter(self._bootstrap, self._ledger_url, self._topic)

    def start_bundle(self) -> None:
        self._letters: dict[str, DeadLetter] = {}

    def process(self, letter: DeadLetter) -> tuple:
        self._letters[letter.source] = letter
        return ()  # a sink: nothing goes downstream

    def finish_bundle(self) -> None:
        # A send error fails the bundle, so the runner retries it.
        self._written.inc(self._writer.write(self._letters.values()))
        self._letters = {}

    def teardown(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()


class WriteDeadLetters(beam.PTransform):
    """Writes ``DeadLetter`` records to ``topic``, once per source position (the ledger in the
    Redis at ``ledger_url``): value and key untouched, reason and source in headers. The sink of a
    pipeline that reads the log without committing features (those write their letters with
    their commits)."""

    def __init__(self, bootstrap: str, ledger_url: str, topic: str = EVENTS_DLQ):
        super().__init__()
        self._bootstrap = bootstrap
        self._ledger_url = ledger_url
        self._topic = topic

    def expand(self, letters: beam.PCollection) -> beam.PCollection:
        return letters | "AppendToDlq" >> beam.ParDo(_WriteDeadLettersFn(self._bootstrap, self._topic, self._ledger_url))


def _letter(record) -> DeadLetter:
    headers = {name: value.decode() for name, value in record.headers or ()}
    # A record someone appended without our headers is named by its own DLQ position.
    own_position = f"{record.topic}/{record.partition}@{record.offset}"
    topic, partition, offset = _parse_source(headers.get(DLQ_SOURCE_HEADER, own_position))
    return DeadLetter(headers.get(DLQ_REASON_HEADER, "unknown"), record.value, record.key, topic, partition, offset)


def read_dead_letters(bootstrap: str, topic: str = EVENTS_DLQ, timeout_s: float = 30.0) -> list[DeadLetter]:
    """Everything the DLQ topic holds now, partition by partition in log order, each source position once."""
    return _read(bootstrap, topic, offsets.offset_ranges(bootstrap, topic), timeout_s)


def latest_dead_letters(bootstrap: str, n: int, topic: str = EVENTS_DLQ, timeout_s: float = 10.0) -> tuple[int, list[DeadLetter]]:
    """The records the DLQ topic holds, and its last ``n`` letters of each partition."""
    ranges = offsets.offset_ranges(bootstrap, topic)
    held = sum(stop - start for start, stop in ranges.values())
    return held, _read(bootstrap, topic, {p: (max(start, stop - n), stop) for p, (start, stop) in ranges.items()}, timeout_s)


def _read(bootstrap: str, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float) -> list[DeadLetter]:
    letters: dict[str, DeadLetter] = {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for partition, (start, stop) in ranges.items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = time.monotonic() + timeout_s
            while consumer.position(tp) < stop:
                if time.monotonic() > deadline:
                    stuck_at = consumer.position(tp)
                    raise KapparecError(f"{topic}/{partition}: no records past offset {stuck_at} in {timeout_s:g} s")
                batch = consumer.poll(timeout_ms=500).get(tp, [])
                for letter in (_letter(r) for r in batch if r.offset < stop):
                    letters.setdefault(letter.source, letter)
    finally:
        consumer.close()
    return list(letters.values())
