"""Mutation merging: each op by hand, the Beam combine against the pure-Python reference."""

from __future__ import annotations

import random

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from featurestore.definitions import Mutation, Op
from tests.transforms_helpers import interaction
from transforms.mutations import CombineMutations, MutationCoder, MutationListCoder, log_order, merge, merge_all, position_order


def test_merge_each_op():
    count = Mutation(Op.COUNT, "f", "e", "x", 2)
    assert merge(Op.COUNT, count, count._replace(value=3)).value == 5
    high = Mutation(Op.MAX, "f", "e", "x", 7)
    assert merge(Op.MAX, high, high._replace(value=9)).value == 9
    assert merge(Op.MAX, high._replace(value=9), high).value == 9
    old, new = Mutation(Op.LATEST, "f", "e", "x", "old", order="1"), Mutation(Op.LATEST, "f", "e", "x", "new", order="2")
    assert merge(Op.LATEST, old, new) == merge(Op.LATEST, new, old) == new
    member = Mutation(Op.TOP, "f", "e", "m", 1.0, limit=2)
    assert merge(Op.TOP, member, member._replace(value=4.0)).value == 4.0


def test_log_order_compares_as_strings_like_the_numbers():
    early = interaction(event_time=999, partition=3, offset=10)
    later = interaction(event_time=1000, partition=0, offset=2)
    same_time_later_offset = interaction(event_time=1000, partition=0, offset=11)
    assert log_order(early) < log_order(later) < log_order(same_time_later_offset)
    assert len({len(log_order(e)) for e in (early, later, same_time_later_offset)}) == 1
    assert position_order(1, 99) < position_order(1, 100) < position_order(2, 0)


def test_merge_all_keeps_the_limit_best_members_ties_broken_by_member():
    scores = [("a", 1.0), ("b", 3.0), ("c", 3.0), ("a", 5.0)]
    members = [Mutation(Op.TOP, "h", "u", name, score, limit=2) for name, score in scores]
    assert merge_all(members) == sorted([members[3], members[2]])


def random_mutations(rng: random.Random, count: int) -> list[Mutation]:
    makers = [
        lambda: Mutation(Op.COUNT, "c", f"e{rng.randrange(3)}", f"f{rng.randrange(4)}", rng.randrange(1, 5)),
        lambda: Mutation(Op.MAX, "m", "e", f"f{rng.randrange(3)}", rng.randrange(100)),
        lambda: Mutation(Op.ADD, "a", f"e{rng.randrange(3)}", f"f{rng.randrange(5)}"),
        lambda: Mutation(Op.TOP, "t", f"e{rng.randrange(2)}", f"m{rng.randrange(30)}", float(rng.randrange(10)), limit=4),
        lambda: Mutation(Op.LATEST, "l", "e", f"f{rng.randrange(3)}", f"v{rng.randrange(9)}", order=f"{rng.randrange(50):03d}"),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def test_combine_mutations_equals_the_reference_and_any_split_of_it():
    rng = random.Random(3)
    mutations = random_mutations(rng, 400)
    expected = merge_all(mutations)
    cut = rng.randrange(len(mutations))
    assert merge_all([*merge_all(mutations[:cut]), *merge_all(mutations[cut:])]) == expected
    assert len([m for m in expected if m.op == Op.TOP and m.entity == "e0"]) == 4
    with beam.Pipeline() as pipeline:
        merged = pipeline | beam.Create(mutations) | CombineMutations()
        assert_that(merged, equal_to(expected))


def test_coders_round_trip():
    mutation = Mutation(Op.LATEST, "f", "e", "x", "v", order="001", limit=0)
    assert MutationCoder().decode(MutationCoder().encode(mutation)) == mutation
    assert MutationListCoder().decode(MutationListCoder().encode([mutation, mutation._replace(value=2.5)]))[1].value == 2.5
