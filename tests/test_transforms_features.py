"""ComputeFeatures: every feature of a batch, and the property the whole design rests on:
merging the outputs of any split of the log into consecutive batches equals one pass."""

from __future__ import annotations

import json
import random
from pathlib import Path

import apache_beam as beam
import pytest

from featurestore.definitions import Feature, Mutation
from kapparec.timeunits import HOUR_MS
from streams.schema import EVENT_TYPES, CatalogEntry, Interaction
from tests.transforms_helpers import interaction, stamped_events
from transforms.config import FeatureConfig
from transforms.features import ComputeFeatures
from transforms.lateness import is_late
from transforms.mutations import merge_all

T0 = 1_700_000_000_000
PARTITIONS = 3
# Small windows and caps so a few hundred events cross many buckets, fill windows and run late.
CONFIG = FeatureConfig(
    history_length=5,
    affinity_bucket_ms=6 * HOUR_MS,
    popularity_bucket_ms=6 * HOUR_MS,
    trending_bucket_ms=HOUR_MS,
    session_window_ms=3 * HOUR_MS,
    max_items_per_session_window=4,
    allowed_lateness_ms=2 * HOUR_MS,
)


class InMemorySessionItems:
    """The SESSION_ITEMS a store would hold after applying some mutations: the windows that their
    partition's high water has not closed yet (merge.lua deletes the others)."""

    def __init__(self, mutations: list[Mutation]):
        high_water = {m.field: m.value for m in mutations if m.feature == Feature.HIGH_WATER}
        self._items: dict[str, set[str]] = {}
        self.closed: set[str] = set()
        for mutation in mutations:
            if mutation.feature == Feature.SESSION_ITEMS:
                partition, closes_at = mutation.order.split("\x1f")
                if high_water.get(partition, -1) >= int(closes_at):
                    self.closed.add(mutation.entity)
                else:
                    self._items.setdefault(mutation.entity, set()).add(mutation.field)

    def lookup(self, entities: list[str]) -> dict[str, set[str]]:
        return {entity: set(self._items[entity]) for entity in entities if entity in self._items}


def random_log(seed: int, count: int = 300) -> tuple[list[Interaction], list[CatalogEntry]]:
    """Events of 8 users over 3 partitions (a user's events in one partition, as keyed by the
    producer), with time jitter, ~10% far-behind stragglers, and catalog versions."""
    rng = random.Random(seed)
    offsets = [0] * PARTITIONS
    watermarks = [-1] * PARTITIONS
    events = []
    for step in range(count):
        user = rng.randrange(8)
        partition = user % PARTITIONS
        event_time = T0 + step * 3 * 60_000 + rng.randrange(-30, 30) * 60_000
        if rng.random() < 0.1:
            event_time -= rng.randrange(1, 8) * HOUR_MS  # some within allowed lateness, most beyond
        event_type = rng.choice(EVENT_TYPES)
        value = {"rate": float(rng.randrange(0, 6)), "progress": rng.choice([0.25, 0.5, 0.9])}.get(event_type)
        events.append(
            Interaction(f"u{user}", f"i{rng.randrange(12)}", event_type, value, event_time, rng.choice(["", "eu", "us"]),
                        "", "", partition, offsets[partition], log_watermark=watermarks[partition])
        )
        offsets[partition] += 1
        watermarks[partition] = max(watermarks[partition], event_time)
    catalog = [
        CatalogEntry(f"i{item}", f"title {item} v{version}", ("drama",) if version % 2 else ("comedy", "drama"), (), None, T0,
                     True, item % 2, item * 10 + version)
        for item in range(12)
        for version in range(rng.randrange(1, 4))
    ]
    return events, catalog


def run_features(tmp_path: Path, name: str, events, catalog, lookup=None) -> list[Mutation]:
    """Runs ComputeFeatures and reads its output back from files."""
    out = tmp_path / name
    with beam.Pipeline() as pipeline:
        stamped = stamped_events(pipeline, events)
        entries = pipeline | "Catalog" >> beam.Create(catalog, reshuffle=False)
        (
            {"events": stamped, "catalog": entries}
            | ComputeFeatures(CONFIG, lookup)
            | beam.Map(lambda mutation: json.dumps(list(mutation)))
            | beam.io.WriteToText(str(out))
        )
    lines = [line for path in tmp_path.glob(f"{name}*") for line in path.read_text().splitlines()]
    return [Mutation(*json.loads(line)) for line in lines]


def split_by_partition(records, rng: random.Random, batches: int) -> list[list]:
    """Consecutive batches: per partition, the records between random offset cuts."""
    split: list[list] = [[] for _ in range(batches)]
    for partition in {record.partition for record in records}:
        in_partition = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
        cuts = sorted(rng.randrange(len(in_partition) + 1) for _ in range(batches - 1))
        for batch, (start, stop) in enumerate(zip([0, *cuts], [*cuts, len(in_partition)])):
            split[batch].extend(in_partition[start:stop])
    return split


@pytest.mark.parametrize("seed", [7, 11])
def test_any_split_of_the_log_merges_to_one_pass(tmp_path, seed):
    events, catalog = random_log(seed)
    assert any(is_late(e, CONFIG.allowed_lateness_ms) for e in events)
    one_pass = run_features(tmp_path, "whole", events, catalog)
    assert len({m.key for m in one_pass}) == len(one_pass), "a batch emits each key at most once"
    assert {m.feature for m in one_pass} >= {
        Feature.HISTORY, Feature.SEEN, Feature.DISLIKED, Feature.PROGRESS, Feature.AFFINITY, Feature.POPULARITY,
        Feature.TRENDING, Feature.SESSION_ITEMS, Feature.COOCCURRENCE, Feature.OCCURRENCE, Feature.CATALOG,
        Feature.HIGH_WATER, Feature.LATE,
    }

    rng = random.Random(seed)
    event_batches = split_by_partition(events, rng, 3)
    catalog_batches = split_by_partition(catalog, rng, 3)
    assert all(event_batches), "every batch holds events"
    stored: list[Mutation] = []
    closed_before_a_batch = set()
    for index, (batch_events, batch_catalog) in enumerate(zip(event_batches, catalog_batches)):
        lookup = InMemorySessionItems(stored) if stored else None
        closed_before_a_batch |= lookup.closed if lookup else set()
        stored = merge_all([*stored, *run_features(tmp_path, f"batch{index}", batch_events, batch_catalog, lookup)])

    assert stored == merge_all(one_pass)
    assert closed_before_a_batch, "later batches ran without the windows their partitions had closed"


def test_without_the_prior_session_items_a_split_would_count_pairs_wrongly(tmp_path):
    """The lookup is what makes co-occurrence split-invariant (the property test is not vacuous)."""
    events = [interaction("a", event_time=T0, offset=0), interaction("b", event_time=T0 + 1, offset=1, log_watermark=T0)]
    whole = run_features(tmp_path, "whole", events, [])
    first = run_features(tmp_path, "first", events[:1], [])
    blind = run_features(tmp_path, "blind", events[1:], [])
    informed = run_features(tmp_path, "informed", events[1:], [], InMemorySessionItems(first))

    def cooc(mutations):
        return sorted((m.entity, m.field, m.value) for m in merge_all(mutations) if m.feature == Feature.COOCCURRENCE)

    assert cooc(whole) == [("a", "b", 1), ("b", "a", 1)]
    assert cooc([*first, *blind]) == []
    assert cooc([*first, *informed]) == cooc(whole)


def _in_log_order(*timed: tuple[str, int]) -> list[Interaction]:
    """u1's clicks in partition 0, each carrying the log watermark of the ones before it."""
    events, watermark = [], -1
    for offset, (item, event_time) in enumerate(timed):
        events.append(interaction(item, event_time=event_time, offset=offset, log_watermark=watermark))
        watermark = max(watermark, event_time)
    return events


@pytest.mark.parametrize("later", [4 * HOUR_MS, 6 * HOUR_MS], ids=["still-open", "closed"])
def test_a_window_stays_open_until_no_later_record_can_be_on_time(tmp_path, later):
    """Window [S, S+3h) closes once the high water reaches its end plus the 2 h lateness: at 4 h a
    record from hour 2 is still on time and must find the window's items; at 6 h it is late."""
    start = T0 - T0 % CONFIG.session_window_ms
    events = _in_log_order(("a", start), ("x", start + later), ("b", start + 2 * HOUR_MS))
    first = merge_all(run_features(tmp_path, "first", events[:2], []))
    lookup = InMemorySessionItems(first)
    assert lookup.closed == ({f"u1|{start}"} if later == 6 * HOUR_MS else set())
    split = merge_all([*first, *run_features(tmp_path, "second", events[2:], [], lookup)])
    whole = run_features(tmp_path, "whole", events, [])
    assert split == merge_all(whole)
    pairs = {(m.entity, m.field) for m in whole if m.feature == Feature.COOCCURRENCE}
    assert (("a", "b") in pairs) == (later == 4 * HOUR_MS)
