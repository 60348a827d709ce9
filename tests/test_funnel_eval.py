"""The funnel measured offline: how its validation users are halved for the blend search and its result confirmed.

(That an offline page excludes what the protocol strikes is checked in tests/test_learned_ranker.py, over the
same replayed funnel, because a replay costs minutes on a loaded machine.)"""

from __future__ import annotations

import dataclasses

import numpy as np

from training.funnel_eval import confirmation_record, halves
from training.split import Split


def a_split(users: int) -> Split:
    return Split(train=None, test={f"u{n}": [f"i{n}"] for n in range(users)}, known_items=[], cutoff_ms=0)


def test_halves_part_the_test_users_at_random_and_keep_the_rest_of_the_split():
    split = a_split(101)
    search, confirmation = halves(split, seed=3)
    assert not set(search.test) & set(confirmation.test)
    assert {**search.test, **confirmation.test} == split.test
    assert (len(search.test), len(confirmation.test)) == (51, 50)
    assert dataclasses.replace(search, test=split.test) == split
    # Seeded: the same seed halves alike, another seed otherwise; neither is the sorted order cut in two.
    assert halves(split, seed=3)[0].test == search.test != halves(split, seed=4)[0].test
    assert set(search.test) != set(sorted(split.test)[:51])


def test_the_searched_blend_is_confirmed_only_when_it_wins_by_more_than_a_standard_error():
    start = np.array([0.1, 0.2, 0.0, 0.3] * 25)
    wins = confirmation_record(start + np.array([0.1, 0.0, 0.05, 0.0] * 25), start)
    assert wins["adopted"] and wins["searched_recall@10"] > wins["start_recall@10"] and wins["paired_se"] > 0
    noise = np.random.default_rng(0).choice([-0.1, 0.1], size=100)
    assert not confirmation_record(start + noise - noise.mean(), start)["adopted"]

