"""Which offsets of which partitions a read covers, checked against the log before the read is built."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from kapparec.errors import KapparecError, UsageError
from streams import offsets

# The stop of a followed partition: Beam's largest int64, a log end that never comes.
UNBOUNDED = 2**63 - 1
# The high water before any record, and the time claimed for invalid records, which move none.
NO_EVENT_TIME = -1


class StopSignal(Protocol):
    """Tells a followed read to end (picklable: it travels to the workers)."""

    def should_stop(self) -> bool: ...


class PartitionRead(NamedTuple):
    """The element of the read: one partition, where to start and stop, and its high water."""

    topic: str
    partition: int
    start: int
    stop: int
    high_water: int = NO_EVENT_TIME


def plan_reads(
    bootstrap: str,
    topic: str,
    *,
    ranges: dict[int, tuple[int, int]] | None = None,
    follow: bool = False,
    start_offsets: dict[int, int] | None = None,
    start_high_water: dict[int, int] | None = None,
) -> list[PartitionRead]:
    """One ``PartitionRead`` per partition, checked against the log as it is now."""
    available = offsets.offset_ranges(bootstrap, topic)
    if follow:
        if ranges is not None:
            raise UsageError("follow mode reads without a stop: give start_offsets, not ranges")
        starts = start_offsets if start_offsets is not None else {p: begin for p, (begin, _) in available.items()}
        wanted = {p: (start, UNBOUNDED) for p, start in starts.items()}
    else:
        if start_offsets is not None:
            raise UsageError("a bounded read takes ranges, not start_offsets")
        wanted = ranges if ranges is not None else available
    high_waters = start_high_water or {}
    _check_partitions(topic, available, wanted, high_waters)
    return [
        PartitionRead(topic, p, start, stop, high_waters.get(p, NO_EVENT_TIME))
        for p, (start, stop) in sorted(wanted.items())
    ]


def _check_partitions(
    topic: str, available: dict[int, tuple[int, int]], wanted: dict[int, tuple[int, int]], high_waters: dict[int, int]
) -> None:
    unknown = sorted((set(wanted) | set(high_waters)) - set(available))
    if unknown:
        raise KapparecError(f"topic {topic!r} has no partition {unknown}")
    for partition, (start, stop) in wanted.items():
        begin, end = available[partition]
        if start < begin:
            raise KapparecError(
                f"{topic}/{partition}: offsets before {begin} are gone from the log, cannot start at {start}"
            )
        if stop < start:
            raise KapparecError(f"{topic}/{partition}: range [{start}, {stop}) is backwards")
        # A bounded read must end: a stop beyond the log end would wait for records that may never come.
        if stop != UNBOUNDED and stop > end:
            raise KapparecError(f"{topic}/{partition}: stop {stop} is beyond the log end {end}")
