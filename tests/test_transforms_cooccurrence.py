"""Cooccurrence: item pairs within a user's session window, continuing what earlier batches stored."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from featurestore.definitions import Feature, Mutation, Op
from kapparec.timeunits import HOUR_MS
from tests.transforms_helpers import DAY0, assert_feature, interaction, stamped_events
from transforms.config import FeatureConfig
from transforms.cooccurrence import Cooccurrence

CONFIG = FeatureConfig(session_window_ms=HOUR_MS, max_items_per_session_window=3)


class StoredItems:
    """A fixed SESSION_ITEMS store; records each lookup's size in a file (it runs in a worker)."""

    def __init__(self, items: dict[str, set[str]], calls_file: Path | None = None):
        self._items = items
        self._calls_file = calls_file

    def lookup(self, entities: list[str]) -> dict[str, set[str]]:
        if self._calls_file:
            with self._calls_file.open("a") as calls:
                calls.write(f"{len(entities)}\n")
        return {entity: self._items[entity] for entity in entities if entity in self._items}


def both_ways(a: str, b: str) -> list[Mutation]:
    return [Mutation(Op.TALLY, Feature.COOCCURRENCE, a, b, 1), Mutation(Op.TALLY, Feature.COOCCURRENCE, b, a, 1)]


def test_pairs_of_the_positive_items_of_each_window():
    events = [
        interaction("a", "click", DAY0, offset=0),
        interaction("b", "play", DAY0 + 1, offset=1),
        interaction("a", "like", DAY0 + 2, offset=2),  # again: still one item of the window
        interaction("d", "dislike", DAY0 + 3, offset=3),
        interaction("e", "impression", DAY0 + 4, offset=4),
        interaction("c", "click", DAY0 + HOUR_MS, offset=5),  # next window
        interaction("c", "click", DAY0, user="u2", offset=0, partition=1),
    ]
    expected = both_ways("a", "b")
    assert_feature(Cooccurrence(CONFIG), events, Feature.COOCCURRENCE, expected)
    occurrences = [Mutation(Op.COUNT, Feature.OCCURRENCE, "", "a", 1), Mutation(Op.COUNT, Feature.OCCURRENCE, "", "b", 1),
                   Mutation(Op.COUNT, Feature.OCCURRENCE, "", "c", 2)]
    assert_feature(Cooccurrence(CONFIG), events, Feature.OCCURRENCE, occurrences)
    # Each window carries its partition and the high water that closes it: its end plus the
    # allowed lateness (6 hours by default).
    session_items = [Mutation(Op.ADD, Feature.SESSION_ITEMS, entity, item, order=closing) for entity, item, closing in
                     [(f"u1|{DAY0}", "a", f"0\x1f{DAY0 + 7 * HOUR_MS}"), (f"u1|{DAY0}", "b", f"0\x1f{DAY0 + 7 * HOUR_MS}"),
                      (f"u1|{DAY0 + HOUR_MS}", "c", f"0\x1f{DAY0 + 8 * HOUR_MS}"),
                      (f"u2|{DAY0}", "c", f"1\x1f{DAY0 + 7 * HOUR_MS}")]]
    assert_feature(Cooccurrence(CONFIG), events, Feature.SESSION_ITEMS, session_items)


def test_new_items_pair_with_stored_ones_and_stored_ones_count_toward_the_cap():
    stored = StoredItems({f"u1|{DAY0}": {"x", "y"}})
    # Log order (not event time) decides which new item fills the one free place: "b".
    events = [interaction("b", "click", DAY0 + 9, offset=0), interaction("x", "click", DAY0 + 1, offset=1),
              interaction("a", "click", DAY0 + 1, offset=2)]
    assert_feature(Cooccurrence(CONFIG, stored), events, Feature.COOCCURRENCE, both_ways("b", "x") + both_ways("b", "y"))
    assert_feature(Cooccurrence(CONFIG, stored), events, Feature.SESSION_ITEMS,
                   [Mutation(Op.ADD, Feature.SESSION_ITEMS, f"u1|{DAY0}", "b", order=f"0\x1f{DAY0 + 7 * HOUR_MS}")])


def test_lookups_are_batched(tmp_path):
    calls = tmp_path / "calls"
    windows = 40
    events = [interaction("a", "click", DAY0 + n * HOUR_MS, offset=n) for n in range(windows)]
    with beam.Pipeline() as pipeline:
        occurrences = stamped_events(pipeline, events) | Cooccurrence(CONFIG, StoredItems({}, calls))
        assert_that(occurrences | beam.Filter(lambda m: m.feature == Feature.OCCURRENCE),
                    equal_to([Mutation(Op.COUNT, Feature.OCCURRENCE, "", "a", windows)]))
    sizes = [int(line) for line in calls.read_text().split()]
    assert sum(sizes) == windows
    assert len(sizes) < windows
