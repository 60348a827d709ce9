"""The splittable read's restriction: offsets still to read, and the high water before them.

Every interaction carries the highest event time of the records before it in its partition, so
a restriction resumed elsewhere (a checkpoint) must carry that high water exactly.
"""

from __future__ import annotations

from typing import NamedTuple

from apache_beam import coders
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.transforms.core import RestrictionProvider

from streams.read_plan import UNBOUNDED, PartitionRead


class LogRestriction(NamedTuple):
    """Offsets ``[start, stop)`` still to read, and the highest event time before ``start``."""

    start: int
    stop: int
    high_water: int


class _LogRestrictionCoder(coders.Coder):
    """Three varints, deterministic and language-neutral enough for any portable runner."""

    _ints = coders.TupleCoder([coders.VarIntCoder()] * 3)

    def encode(self, value: LogRestriction) -> bytes:
        return self._ints.encode(tuple(value))

    def decode(self, encoded: bytes) -> LogRestriction:
        return LogRestriction(*self._ints.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


class LogRestrictionTracker(RestrictionTracker):
    """Claims record offsets in log order and keeps the high water of what it claimed.

    A claimed position is ``(offset, event_time)``: the tracker moves the high water as it
    claims, so a checkpoint residual carries the exact high water of the records before it.
    Only checkpoints split a restriction: a split anywhere else would start a residual at a
    record whose high water is not known yet.
    """

    def __init__(self, restriction: LogRestriction):
        self._restriction = restriction
        self._next = restriction.start  # the first offset not claimed yet
        self._high_water = restriction.high_water
        self._reached_stop = restriction.start >= restriction.stop

    def current_restriction(self) -> LogRestriction:
        return self._restriction

    def try_claim(self, position: tuple[int, int]) -> bool:
        offset, event_time = position
        if offset >= self._restriction.stop:
            self._reached_stop = True
            return False
        if offset < self._next:
            raise ValueError(f"offset {offset} claimed after {self._next - 1}: claims must move forward")
        self._next = offset + 1
        if event_time > self._high_water:
            self._high_water = event_time
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[LogRestriction, LogRestriction] | None:
        if fraction_of_remainder != 0 or self._reached_stop or self._next >= self._restriction.stop:
            return None
        start, stop, high_water = self._restriction
        primary = LogRestriction(start, self._next, high_water)
        residual = LogRestriction(self._next, stop, self._high_water)
        self._restriction = primary
        return primary, residual

    def check_done(self) -> None:
        if not (self._reached_stop or self._next >= self._restriction.stop):
            raise ValueError(f"offsets [{self._next}, {self._restriction.stop}) were neither read nor split off")

    def current_progress(self) -> RestrictionProgress:
        start, stop, _ = self._restriction
        remaining = stop - self._next if self.is_bounded() else 1
        return RestrictionProgress(completed=self._next - start, remaining=remaining)

    def is_bounded(self) -> bool:
        return self._restriction.stop != UNBOUNDED


class LogRestrictionProvider(RestrictionProvider):
    def initial_restriction(self, element: PartitionRead) -> LogRestriction:
        return LogRestriction(element.start, element.stop, element.high_water)

    def create_tracker(self, restriction: LogRestriction) -> LogRestrictionTracker:
        return LogRestrictionTracker(restriction)

    def restriction_size(self, element: PartitionRead, restriction: LogRestriction) -> int:
        # An unbounded restriction has no size; 1 keeps it schedulable without claiming it is huge.
        return 1 if restriction.stop == UNBOUNDED else restriction.stop - restriction.start

    def restriction_coder(self) -> coders.Coder:
        return _LogRestrictionCoder()


RESTRICTIONS = LogRestrictionProvider()
