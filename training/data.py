"""Training data as columns: interactions sorted by event time, and the latest catalog.

A replay of the log yields ``streams.schema.Interaction`` / ``CatalogEntry`` tuples; models,
baselines and the evaluation work on the columnar ``Interactions`` built from them, because
every step after the replay (splitting, matrices) is a vectorised numpy operation. The user
tower's point-in-time inputs are built in ``training.tower_inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Iterable, Sequence

import numpy as np

from featurestore.definitions import NOT_ENGAGEMENT_TYPES
from streams.schema import CatalogEntry, Interaction


@dataclass(frozen=True)
class Interactions:
    """Columns of equal length, sorted by (event_time, partition, offset) — log order within a time."""

    user_ids: np.ndarray  # object (str)
    item_ids: np.ndarray  # object (str)
    event_types: np.ndarray  # object (str)
    values: np.ndarray  # float64, nan where absent
    event_times: np.ndarray  # int64 ms
    regions: np.ndarray  # object (str, "" if none)
    devices: np.ndarray  # object (str, "" if none)
    # Log position: the feature store orders equal event times by it (see featurestore.definitions).
    partitions: np.ndarray  # int64
    offsets: np.ndarray  # int64

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Interactions columns differ in length: {lengths}")

    @classmethod
    def from_events(cls, events: Iterable[Interaction]) -> "Interactions":
        rows = list(events)
        if not rows:
            return cls.empty()
        columns = list(zip(*rows))
        column_of = Interaction._fields.index
        times = np.asarray(columns[column_of("event_time")], dtype=np.int64)
        partitions = np.asarray(columns[column_of("partition")], dtype=np.int64)
        offsets = np.asarray(columns[column_of("offset")], dtype=np.int64)
        order = np.lexsort((offsets, partitions, times))
        values = np.array(columns[column_of("value")], dtype=np.float64)  # None becomes nan
        return cls(
            user_ids=_strings(columns[column_of("user_id")])[order],
            item_ids=_strings(columns[column_of("item_id")])[order],
            event_types=_strings(columns[column_of("event_type")])[order],
            values=values[order],
            event_times=times[order],
            regions=_strings(columns[column_of("region")])[order],
            devices=_strings(columns[column_of("device")])[order],
            partitions=partitions[order],
            offsets=offsets[order],
        )

    @classmethod
    def from_columns(
        cls, user_ids: Sequence[str], item_ids: Sequence[str], event_times: Sequence[int], event_type: str = "view"
    ) -> "Interactions":
        """Interactions of one type without value or context, sorted by time (stable: input order breaks ties).

        They sit in one partition at their input positions as offsets.
        """
        times = np.asarray(event_times, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        blank = np.full(len(times), "", dtype=object)
        return cls(
            user_ids=_strings(user_ids)[order],
            item_ids=_strings(item_ids)[order],
            event_types=np.full(len(times), event_type, dtype=object),
            values=np.full(len(times), np.nan),
            event_times=times[order],
            regions=blank,
            devices=blank.copy(),
            partitions=np.zeros(len(times), dtype=np.int64),
            offsets=order.astype(np.int64),
        )

    @classmethod
    def empty(cls) -> "Interactions":
        strings, ints = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        return cls(strings, strings, strings, np.empty(0), ints, strings, strings, ints, ints)

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, mask_or_index: np.ndarray) -> "Interactions":
        """Rows selected by a boolean mask or an index array (pass indices in time order to stay sorted)."""
        return Interactions(**{f.name: getattr(self, f.name)[mask_or_index] for f in fields(self)})


@dataclass(frozen=True)
class Catalog:
    """The latest version of every item still active, decided by log order (partition, offset)."""

    item_ids: list[str]
    titles: dict[str, str]
    categories: dict[str, tuple[str, ...]]
    created_at: dict[str, int]
    release_years: dict[str, int] = field(default_factory=dict)  # the items whose record gives one
    # Every item's latest version, inactive ones too: the CATALOG feature's state, which a
    # replay of the catalog through the feature pipeline must rebuild (``training.feature_replay``).
    latest: tuple[CatalogEntry, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[CatalogEntry]) -> "Catalog":
        latest: dict[str, CatalogEntry] = {}
        # The items topic is keyed by item id, so all versions of an item share a partition and
        # the highest offset is the latest version; a deactivated item leaves the catalog.
        for entry in sorted(entries, key=lambda e: (e.partition, e.offset)):
            latest[entry.item_id] = entry
        active = sorted(item for item, entry in latest.items() if entry.active)
        return cls(
            item_ids=active,
            titles={item: latest[item].title for item in active},
            categories={item: tuple(latest[item].categories) for item in active},
            created_at={item: latest[item].created_at for item in active},
            release_years={item: latest[item].release_year for item in active if latest[item].release_year is not None},
            latest=tuple(latest[item] for item in sorted(latest)),
        )

    def __len__(self) -> int:
        return len(self.item_ids)


def retrieval_positives(interactions: Interactions) -> Interactions:
    """The interactions that say "this user engaged with this item", first occurrence per pair.

    Every event except impressions and dislikes counts, and every rating counts whatever its
    value: that is the MovieLens retrieval protocol the reference numbers are measured on (a
    rating means the user chose to watch the film). Repeats of a (user, item) pair keep only
    the first, so a held-out item can never also sit in the same user's training history.
    """
    engaged = ~np.isin(interactions.event_types, list(NOT_ENGAGEMENT_TYPES))
    kept = np.flatnonzero(engaged)
    users = np.unique(interactions.user_ids[kept], return_inverse=True)[1].astype(np.int64)
    items, item_codes = np.unique(interactions.item_ids[kept], return_inverse=True)
    _, first = np.unique(users * len(items) + item_codes, return_index=True)
    return interactions.take(kept[np.sort(first)])


def _strings(column: Iterable[str]) -> np.ndarray:
    values = list(column)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
