"""Merging feature mutations: the Beam combine every transform ends with, and its pure-Python twin.

Every op in ``featurestore.definitions.Op`` is associative and commutative, so a batch can
merge its mutations in any grouping (Beam lifts the combine before the shuffle) and the
store can merge batches in any order. ``merge_all`` is the same merge without Beam: tests
use it to merge the outputs of several batches and compare them with one pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

import apache_beam as beam

from featurestore.definitions import Mutation, Op

# Fixed widths so LATEST orders compare correctly as strings: 15 digits of event-time
# milliseconds last until the year 33658, 19 digits hold any Kafka offset (an int64).
_TIME_WIDTH = 15
_PARTITION_WIDTH = 6
_OFFSET_WIDTH = 19

CombineKey = tuple[str, str, str, str]


def position_order(partition: int, offset: int) -> str:
    """A record's log position as a fixed-width string, ordered like (partition, offset)."""
    return f"{partition:0{_PARTITION_WIDTH}d}|{offset:0{_OFFSET_WIDTH}d}"


def log_order(event) -> str:
    """The LATEST order of an interaction: event time first, log position breaking ties.

    Event time (not log position) decides, so a late-arriving old event cannot overwrite a
    newer state; the position makes the order total and identical in every replay.
    """
    return f"{event.event_time:0{_TIME_WIDTH}d}|{position_order(event.partition, event.offset)}"


def _sum(a: Mutation, b: Mutation) -> Mutation:
    # tuple.__new__ is _replace without its per-call field lookups; counts merge most often.
    return tuple.__new__(Mutation, (a.op, a.feature, a.entity, a.field, a.value + b.value, a.order, a.limit))


def _greater_value(a: Mutation, b: Mutation) -> Mutation:
    return a if a.value >= b.value else b


def _first(a: Mutation, b: Mutation) -> Mutation:
    return a


def _later(a: Mutation, b: Mutation) -> Mutation:
    # The payload breaks ties only so that the result never depends on input order.
    return a if (a.order, a.value) >= (b.order, b.value) else b


_MERGERS: dict[str, Callable[[Mutation, Mutation], Mutation]] = {
    Op.COUNT: _sum,
    Op.MAX: _greater_value,
    Op.ADD: _first,  # set union: the member is the field, the value carries nothing
    Op.TOP: _greater_value,  # one member: keep its best score
    Op.LATEST: _later,
    Op.DISTINCT: _sum,  # the count sums; the ranking follows from which fields exist
    Op.TALLY: _sum,
}


def merge(op: str, a: Mutation, b: Mutation) -> Mutation:
    """Merge two mutations of the same ``Mutation.key`` by ``op``."""
    return _MERGERS[op](a, b)


def combine_key(mutation: Mutation) -> CombineKey:
    """The unit a batch merges into one result.

    TOP mutations group by (feature, entity), not by member, so the ``limit`` trim happens
    inside the combine (and so before the shuffle): a user's 10,000 plays in one batch
    leave the worker as ``history_length`` members.
    """
    if mutation.op == Op.TOP:
        return (mutation.op, mutation.feature, mutation.entity, "")
    return mutation.key


def best_members(members: Iterable[Mutation]) -> list[Mutation]:
    """TOP trim: each member once with its best score, then the ``limit`` best (score, member)."""
    best: dict[str, Mutation] = {}
    for mutation in members:
        kept = best.get(mutation.field)
        best[mutation.field] = mutation if kept is None else _greater_value(kept, mutation)
    if not best:
        return []
    limit = next(iter(best.values())).limit
    return heapq.nlargest(limit, best.values(), key=lambda m: (m.value, m.field))


class MutationCoder(beam.coders.Coder):
    """Encodes a Mutation as the plain tuple of its fields.

    Beam's default coder pickles named tuples one by one; a plain tuple of str/int/float
    takes its fast, deterministic path. Registered for ``Mutation`` below.
    """

    _fields = beam.coders.FastPrimitivesCoder()

    def encode(self, mutation: Mutation) -> bytes:
        return self._fields.encode(tuple(mutation))

    def decode(self, encoded: bytes) -> Mutation:
        return Mutation(*self._fields.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


class MutationListCoder(MutationCoder):
    """Encodes a list of Mutations (the combine accumulator) in one call."""

    def encode(self, mutations: list[Mutation]) -> bytes:
        return self._fields.encode([tuple(mutation) for mutation in mutations])

    def decode(self, encoded: bytes) -> list[Mutation]:
        return [Mutation(*fields) for fields in self._fields.decode(encoded)]


beam.coders.registry.register_coder(Mutation, MutationCoder)


class MergeMutationsFn(beam.CombineFn):
    """Merges the mutations of one ``combine_key``; the accumulator is a list of mutations.

    One element for every op but TOP, the best members so far for TOP (trimmed lazily at
    twice the limit so a trim costs O(limit) per limit inputs).
    """

    def create_accumulator(self) -> list[Mutation]:
        return []

    def add_input(self, accumulator: list[Mutation], mutation: Mutation) -> list[Mutation]:
        if not accumulator:
            accumulator.append(mutation)
        elif mutation.op == Op.TOP:
            accumulator.append(mutation)
            if len(accumulator) > 2 * mutation.limit:
                accumulator[:] = best_members(accumulator)
        else:
            accumulator[0] = merge(mutation.op, accumulator[0], mutation)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[Mutation]]) -> list[Mutation]:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for mutation in accumulator:
                merged = self.add_input(merged, mutation)
        return merged

    def get_accumulator_coder(self) -> beam.coders.Coder:
        return MutationListCoder()

    def extract_output(self, accumulator: list[Mutation]) -> list[Mutation]:
        if accumulator and accumulator[0].op == Op.TOP:
            return best_members(accumulator)
        return accumulator


def _key_by_combine_key(mutation: Mutation) -> tuple[CombineKey, Mutation]:
    return combine_key(mutation), mutation


def _merged(keyed: tuple[CombineKey, list[Mutation]]) -> list[Mutation]:
    return keyed[1]


class CombineMutations(beam.PTransform):
    """Merges a batch's mutations so that each key (each TOP member) is emitted at most once."""

    def expand(self, mutations):
        return (
            mutations
            | "KeyByMutation" >> beam.Map(_key_by_combine_key)
            | "Merge" >> beam.CombinePerKey(MergeMutationsFn())
            | "Unkey" >> beam.FlatMap(_merged).with_output_types(Mutation)
        )


def merge_all(mutations: Iterable[Mutation]) -> list[Mutation]:
    """What ``CombineMutations`` computes, in plain Python, sorted: the reference for tests."""
    merge_fn = MergeMutationsFn()
    groups: dict[CombineKey, list[Mutation]] = {}
    for mutation in mutations:
        key = combine_key(mutation)
        groups[key] = merge_fn.add_input(groups.get(key, []), mutation)
    return sorted(m for group in groups.values() for m in merge_fn.extract_output(group))
