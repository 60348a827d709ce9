"""Item-item co-occurrence: how many user windows (fixed event-time windows per user) hold
both items, and how many hold each item.

A window's items can arrive over several micro-batches, so the transform must know what
earlier batches already stored for it: ``prior_session_items`` looks up the SESSION_ITEMS of
the batch's windows (the feature store in a stream job, nothing in a fresh backfill). Each
batch then adds only its new items and the pairs they make, so the counts of any split of
the log equal those of one pass. This relies on one user's events sitting in one partition
(the events topic is keyed by user id), so per-partition offset prefixes are also per-user
prefixes in log order.

A window is *closed* once its partition's high water (the greatest event time committed from
it) reaches ``window_closes_at``: every later record of that partition for the window is then
too late (``transforms.lateness``), so no batch will look its items up again. Each window's
SESSION_ITEMS carries its partition and that time, and the merge deletes it at that point
(``featurestore/merge.lua``): the session sets are bounded by the open windows, and because a
window goes only when nothing can touch it any more, every split of the log still counts the
same pairs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Protocol

import apache_beam as beam

from featurestore.definitions import Feature, Mutation, Op
from featurestore.layout import STAGE_SEPARATOR
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import EventBatch
from transforms.mutations import CombineMutations, MergedMutations

# Windows whose prior items are fetched in one lookup call.
LOOKUP_BATCH_SIZE = 256


class SessionItemsLookup(Protocol):
    """The SESSION_ITEMS already stored for some "user|window_start_ms" entities. Picklable."""

    def lookup(self, entities: list[str]) -> dict[str, set[str]]: ...


def session_entity(user_id: str, window_start_ms: int) -> str:
    return f"{user_id}|{window_start_ms}"


def window_closes_at(config: FeatureConfig, window_start_ms: int) -> int:
    """The partition high water from which no record of the window is on time any more."""
    return window_start_ms + config.session_window_ms + config.allowed_lateness_ms


def window_closing(config: FeatureConfig, entity: str, partition: int) -> str:
    """A window's SESSION_ITEMS attribute: "partition\\x1fcloses_at" (see the module docstring)."""
    window_start_ms = int(entity.rsplit("|", 1)[1])
    return f"{partition}{STAGE_SEPARATOR}{window_closes_at(config, window_start_ms)}"


def session_records(batch: EventBatch) -> Iterator[tuple[str, tuple[int, int, str]]]:
    """The positive, on-time records of ``batch`` as ("user|window_start", (partition, offset, item))."""
    window_ms = batch.config.session_window_ms
    for event in batch.positive:
        window = event.event_time - event.event_time % window_ms
        yield session_entity(event.user_id, window), (event.partition, event.offset, event.item_id)


def session_record(config: FeatureConfig, event: Interaction) -> Iterator[tuple[str, tuple[int, int, str]]]:
    """``session_records`` of one event."""
    return session_records(EventBatch(config, [event]))


def _window_items(keyed: tuple[str, Iterable[tuple[int, int, str]]]) -> tuple[str, int, list[str]]:
    """(entity, its partition, the window's distinct items in log order)."""
    entity, records = keyed
    records = sorted(records)
    return entity, records[0][0], list(dict.fromkeys(item for _, _, item in records))


def add_window(merged: MergedMutations, config: FeatureConfig, entity: str, partition: int, items: list[str],
               stored: set[str]) -> None:
    """A window's new ``items`` (distinct, in log order) given the ``stored`` ones of earlier batches."""
    # Items earlier batches stored count toward the cap, so the window keeps the same
    # first ``max_items`` items in log order however the log was split.
    room = max(config.max_items_per_session_window - len(stored), 0)
    new = [item for item in items if item not in stored][:room]
    if not new:
        return
    groups = merged.groups
    members = groups.setdefault((Op.ADD, Feature.SESSION_ITEMS, entity, window_closing(config, entity, partition)), {})
    occurrences = groups.setdefault((Op.COUNT, Feature.OCCURRENCE, "", ""), {})
    for index, item in enumerate(new):
        members[item] = None
        occurrences[item] = occurrences.get(item, 0) + 1
        pairs = groups.setdefault((Op.TALLY, Feature.COOCCURRENCE, item, None), {})
        for other in (*stored, *new[:index]):
            pairs[other] = pairs.get(other, 0) + 1
            back = groups.setdefault((Op.TALLY, Feature.COOCCURRENCE, other, None), {})
            back[item] = back.get(item, 0) + 1


class _PairsFn(beam.DoFn):
    def __init__(self, prior_session_items: SessionItemsLookup | None, config: FeatureConfig):
        self._prior_session_items = prior_session_items
        self._config = config

    def process(self, windows: list[tuple[str, int, list[str]]]) -> Iterator[Mutation]:
        prior = self._prior_session_items.lookup([entity for entity, _, _ in windows]) if self._prior_session_items else {}
        merged = MergedMutations()
        for entity, partition, items in windows:
            add_window(merged, self._config, entity, partition, items, prior.get(entity, set()))
        return merged.mutations()


class SessionPairs(beam.PTransform):
    """("user|window_start", (partition, offset, item)) records -> SESSION_ITEMS, COOCCURRENCE, OCCURRENCE."""

    def __init__(self, config: FeatureConfig, prior_session_items: SessionItemsLookup | None = None):
        super().__init__()
        self._config = config
        self._prior_session_items = prior_session_items

    def expand(self, records):
        return (
            records
            | "GroupWindow" >> beam.GroupByKey()
            | "WindowItems" >> beam.Map(_window_items)
            | "BatchLookups" >> beam.BatchElements(max_batch_size=LOOKUP_BATCH_SIZE)
            | "Pairs" >> beam.ParDo(_PairsFn(self._prior_session_items, self._config))
            | "Combine" >> CombineMutations()
        )


class Cooccurrence(beam.PTransform):
    """SESSION_ITEMS ADD, COOCCURRENCE TALLY (both directions) and OCCURRENCE COUNT over the
    positive, on-time records of each (user, session window), capped at
    ``max_items_per_session_window`` items per window in log order."""

    def __init__(self, config: FeatureConfig, prior_session_items: SessionItemsLookup | None = None):
        super().__init__()
        self._config = config
        self._prior_session_items = prior_session_items

    def expand(self, events):
        return (
            events
            | "KeyBySession" >> beam.FlatMap(functools.partial(session_record, self._config))
            | "Pairs" >> SessionPairs(self._config, self._prior_session_items)
        )
