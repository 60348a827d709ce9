"""The user tower's inputs at any moment of the log, built with the feature store's own definitions.

Serving feeds the user tower what the Beam transforms keep in Redis (``featurestore.definitions``):

- HISTORY: the ``record_limit`` latest non-impression records of the user, ranked by (event
  time, member) like the Redis zset, read through ``tower_history``;
- PROFILE: the region and device of the user's latest record that had one.

Training must feed every example those same states *as they stood just before the example*,
or the tower learns on one definition and is served another. ``UserLog`` rebuilds them from the
replayed log with the same functions the Beam transform and ``FeatureReader`` use, so nothing
here is a second definition: the skew test checks that at the log's end they equal what
``FeatureReader`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featurestore.definitions import HISTORY_EXCLUDED_TYPES, PROFILE_FIELDS, history_member, timed_tower_history
from training.data import Interactions
from transforms.config import FeatureConfig

# A time after every event: the state at the end of the log.
END_OF_LOG = np.iinfo(np.int64).max


class UserLog:
    """Each user's replayed records in the store's order, for point-in-time reads."""

    def __init__(self, events: Interactions, record_limit: int = FeatureConfig().history_length):
        self.record_limit = record_limit
        self._build_history(events)
        self._events = events

    def _build_history(self, events: Interactions) -> None:
        recorded = np.flatnonzero(~np.isin(events.event_types, list(HISTORY_EXCLUDED_TYPES)))
        users = events.user_ids[recorded].tolist()
        items = events.item_ids[recorded].tolist()
        types = events.event_types[recorded].tolist()
        times = events.event_times[recorded].tolist()
        members = [
            history_member(item, event_type, time, partition, offset)
            for item, event_type, time, partition, offset in zip(
                items, types, times, events.partitions[recorded].tolist(), events.offsets[recorded].tolist()
            )
        ]
        order = sorted(range(len(users)), key=lambda r: (users[r], times[r], members[r]))
        self._items = [items[r] for r in order]
        self._types = [types[r] for r in order]
        self._times = np.array([times[r] for r in order], dtype=np.int64)
        self._bounds: dict[str, tuple[int, int]] = {}
        for position, r in enumerate(order):
            start, _ = self._bounds.get(users[r], (position, position))
            self._bounds[users[r]] = (start, position + 1)

    def _stored(self, user: str, before_ms: int) -> range:
        """Record numbers of the HISTORY state from the user's records strictly before ``before_ms``, newest first."""
        start, end = self._bounds.get(user, (0, 0))
        stop = start + int(np.searchsorted(self._times[start:end], before_ms, side="left"))
        return range(stop - 1, max(start, stop - self.record_limit) - 1, -1)

    def timed_tower_history(self, user: str, length: int, before_ms: int = END_OF_LOG) -> list[tuple[str, int]]:
        """``timed_tower_history`` of the HISTORY state built from the user's records strictly before ``before_ms``."""
        return timed_tower_history(((self._items[r], self._types[r], int(self._times[r])) for r in self._stored(user, before_ms)), length)

    def tower_history_records(self, user: str, length: int, before_ms: int = END_OF_LOG) -> list[int]:
        """The record numbers (``record_item``/``record_time``) behind ``timed_tower_history``'s entries, newest first.

        Each entry is the newest stored record with its item and time: the one whose engagement
        ``timed_tower_history`` keeps, so the records give back exactly its (item, time) pairs.
        """
        stored = self._stored(user, before_ms)
        newest_record = {}
        for r in reversed(stored):  # oldest first, so the newest record of an (item, time) stays
            newest_record[self._items[r], int(self._times[r])] = r
        return [newest_record[entry] for entry in self.timed_tower_history(user, length, before_ms)]

    def record_item(self, record: int) -> str:
        return self._items[record]

    def record_time(self, record: int) -> int:
        return int(self._times[record])

    def tower_history(self, user: str, length: int, before_ms: int = END_OF_LOG) -> list[str]:
        return [item for item, _ in self.timed_tower_history(user, length, before_ms)]

    def timed_tower_histories(self, users: Sequence[str], times: Sequence[int], length: int) -> list[list[tuple[str, int]]]:
        """For each (user, time): the tower's history just before that time, with each item's event time."""
        return [self.timed_tower_history(user, length, int(time)) for user, time in zip(users, times)]

    def profiles(self) -> dict[str, dict[str, str]]:
        """PROFILE at the end of the log: each user's latest non-empty region and device.

        ``Interactions`` are sorted by (event time, partition, offset), the LATEST order of
        the store, so the last non-empty value per user wins.
        """
        latest: dict[str, dict[str, str]] = {}
        values = [getattr(self._events, f"{name}s").tolist() for name in PROFILE_FIELDS]
        for user, *row in zip(self._events.user_ids.tolist(), *values):
            profile = latest.setdefault(user, dict.fromkeys(PROFILE_FIELDS, ""))
            for name, value in zip(PROFILE_FIELDS, row):
                if value:
                    profile[name] = value
        return latest

    def last_event_times(self) -> dict[str, int]:
        """Each user's latest event time (any event type)."""
        return dict(zip(self._events.user_ids.tolist(), self._events.event_times.tolist()))
