"""Merging feature mutations: the Beam combine every transform ends with, and its pure-Python twin.

Every op in ``featurestore.definitions.Op`` is associative and commutative, so a batch can
merge its mutations in any grouping (Beam lifts the combine before the shuffle) and the
store can merge batches in any order. ``merge_all`` is the same merge without Beam: tests
use it to merge the outputs of several batches and compare them with one pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam

from featurestore.definitions import Mutation, Op

# Fixed widths so LATEST orders compare correctly as strings: 15 digits of event-time
# milliseconds last until the year 33658, 19 digits hold any Kafka offset (an int64).
_TIME_WIDTH = 15
_PARTITION_WIDTH = 6
_OFFSET_WIDTH = 19

CombineKey = tuple[str, str, str, str]


# printf-style: one formatting pass, twice as fast as the f-string; these run per record.
_POSITION_ORDER = f"%0{_PARTITION_WIDTH}d|%0{_OFFSET_WIDTH}d"
_LOG_ORDER = f"%0{_TIME_WIDTH}d|{_POSITION_ORDER}"


def position_order(partition: int, offset: int) -> str:
    """A record's log position as a fixed-width string, ordered like (partition, offset)."""
    return _POSITION_ORDER % (partition, offset)


def log_order(event) -> str:
    """The LATEST order of an interaction: event time first, log position breaking ties.

    Event time (not log position) decides, so a late-arriving old event cannot overwrite a
    newer state; the position makes the order total and identical in every replay.
    """
    return _LOG_ORDER % (event.event_time, event.partition, event.offset)


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


class MergedMutations:
    """Mutations merged by key as they are added: what ``CombineMutations`` computes for a
    bundle, held grouped by target key so that a batch of events adds its values with a few
    dict updates instead of a ``Mutation`` and a merge call per value, and so that the commit
    sends each group as it is.

    ``groups`` maps (op, feature, entity, attribute) to {field: value}. The attribute is what
    all fields of the key share: a COUNT's expiry (its ``order``, "" for a key without a
    window), a TOP's limit, a DISTINCT's (expiry, cap), an ADD's expiry or closing (its ``order``:
    an expiry, or "partition\x1fcloses_at" for a session window; None for a set that never
    goes), None otherwise. Values: the sum
    (COUNT, TALLY, DISTINCT), the maximum (MAX), None (ADD), (order, payload) (LATEST), the best
    score (TOP, trimmed lazily to its limit).
    """

    def __init__(self):
        self.groups: dict[tuple[str, str, str, object], dict] = {}

    def __len__(self) -> int:
        """Fields held, over every key."""
        return sum(map(len, self.groups.values()))

    def fields(self, op: str, feature: str, entity: str, attribute: object = None) -> dict:
        """The fields of one target key, to update in place."""
        return self.groups.setdefault((op, feature, entity, attribute), {})

    def add_sum(self, op: str, feature: str, entity: str, field: str, value: int, attribute: object = None) -> None:
        """COUNT, TALLY and DISTINCT: values add up."""
        fields = self.groups.setdefault((op, feature, entity, attribute), {})
        fields[field] = fields.get(field, 0) + value

    def add_max(self, feature: str, entity: str, field: str, value: int) -> None:
        fields = self.fields(Op.MAX, feature, entity)
        kept = fields.get(field)
        if kept is None or value > kept:
            fields[field] = value

    def add_latest(self, feature: str, entity: str, field: str, order: str, value) -> None:
        fields = self.groups.setdefault((Op.LATEST, feature, entity, None), {})
        kept = fields.get(field)
        if kept is None or (order, value) > kept:  # the payload breaks ties, as ``merge`` does
            fields[field] = (order, value)

    def add_top(self, feature: str, entity: str, member: str, score: float, limit: int) -> None:
        key = (Op.TOP, feature, entity, limit)
        scores = self.groups.get(key)
        if scores is None:
            scores = self.groups[key] = {}
        kept = scores.get(member)
        if kept is None or score > kept:
            scores[member] = score
            if len(scores) > 4 * limit:  # trimmed lazily, so a trim costs O(limit) per 3 x limit inputs
                self.groups[key] = _best_scores(scores, limit)

    def add(self, mutation: Mutation) -> None:
        op, feature, entity, field, value, order, limit = mutation
        if op in (Op.COUNT, Op.TALLY, Op.DISTINCT):
            attribute = order if op == Op.COUNT else (order, limit) if op == Op.DISTINCT else None
            self.add_sum(op, feature, entity, field, value, attribute)
        elif op == Op.MAX:
            self.add_max(feature, entity, field, value)
        elif op == Op.ADD:
            self.fields(op, feature, entity, order or None)[field] = None
        elif op == Op.LATEST:
            self.add_latest(feature, entity, field, order, value)
        elif op == Op.TOP:
            self.add_top(feature, entity, field, value, limit)
        else:
            raise ValueError(f"unknown merge op {op!r}")

    def merged(self) -> Iterator[tuple[tuple[str, str, str, object], dict]]:
        """Every (group key, fields), each TOP trimmed to its limit."""
        for key, fields in self.groups.items():
            yield key, (_best_scores(fields, key[3]) if key[0] == Op.TOP else fields)

    def mutations(self) -> Iterator[Mutation]:
        """Each key once, merged."""
        new = tuple.__new__  # Mutation(...) without its keyword handling: this runs per key
        for (op, feature, entity, attribute), fields in self.merged():
            if op == Op.LATEST:
                for field, (order, value) in fields.items():
                    yield new(Mutation, (op, feature, entity, field, value, order, 0))
                continue
            order, limit = {Op.COUNT: (attribute, 0), Op.DISTINCT: attribute, Op.TOP: ("", attribute),
                            Op.ADD: (attribute or "", 0)}.get(op, ("", 0))
            for field, value in fields.items():
                yield new(Mutation, (op, feature, entity, field, 0 if value is None else value, order, limit))


def _best_scores(scores: dict[str, float], limit: int) -> dict[str, float]:
    """The ``limit`` best (score, member) of a TOP entity, as ``best_members`` keeps them."""
    if len(scores) <= limit:
        return scores
    return {member: score for score, member in heapq.nlargest(limit, ((s, m) for m, s in scores.items()))}
