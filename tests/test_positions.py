"""Training at every position: each query of a chunk sees exactly its point-in-time history, and
the towers compute on chunks what they compute on single examples (what serving calls)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import training  # noqa: F401 - legacy Keras before TensorFlow loads
import tensorflow as tf

from modelfiles.query import AGE_BUCKETS, ENCODERS, HISTORY, HISTORY_AGE, age_buckets, timed_rows
from streams.synthetic import SyntheticLog
from training.data import Interactions, retrieval_positives
from training.tower_inputs import UserLog
from training.two_tower.features import ItemFields
from training.two_tower.positions import NO_SLOT, QUERY_MASK, SEQUENCE, SLOTS, position_examples
from training.two_tower.train import TwoTowerRecommender

from tests.test_two_tower import PARAMS, synthetic_data

HISTORY_LEN = 20
CHUNKS = 50  # the chunks a test encodes both ways


def movielens_shaped(seed: int = 0, users: int = 40) -> Interactions:
    """Ratings only, each (user, item) once, users with more ratings than HISTORY keeps, and
    bursts of ratings within one second (MovieLens' timestamps are whole seconds)."""
    rng = np.random.default_rng(seed)
    user_ids, item_ids, times = [], [], []
    for user in range(users):
        count = int(rng.integers(5, 160))
        items = rng.choice(2_000, count, replace=False)
        seconds = np.cumsum(rng.choice([0, 0, 1, 60, 86_400], count))
        user_ids += [f"u{user}"] * count
        item_ids += [f"i{item}" for item in items]
        times += (1_000_000_000_000 + seconds * 1000).tolist()
    return Interactions.from_columns(user_ids, item_ids, times, event_type="rate")


def synthetic_log() -> Interactions:
    return synthetic_data(SyntheticLog(users=40, items=120, events=6_000, seed=5))[0]


def chunk_order(train: Interactions) -> list[int]:
    """The rows of ``train`` in the chunks' query order: users by first appearance, each user's in log order."""
    first: dict[str, int] = {}
    users = train.user_ids.tolist()
    for row, user in enumerate(users):
        first.setdefault(user, row)
    return sorted(range(len(train)), key=lambda row: (first[users[row]], row))


def read_back(examples: dict[str, np.ndarray]) -> tuple[list[list[str]], np.ndarray]:
    """Each real query's history items through its slots, newest first, and its ages (chunk order)."""
    histories = []
    for sequence, slots, real in zip(examples[SEQUENCE], examples[SLOTS], examples[QUERY_MASK]):
        histories += [[str(sequence[s]) for s in query_slots if s != NO_SLOT] for query_slots in slots[real]]
    return histories, examples[HISTORY_AGE][examples[QUERY_MASK]]


def plain_causal_prefix(train: Interactions, length: int) -> list[list[str]]:
    """What a causal mask over the user's earlier positives alone would show, newest first."""
    earlier: dict[str, list[str]] = {}
    prefixes = []
    for user, item in zip(train.user_ids.tolist(), train.item_ids.tolist()):
        seen = earlier.setdefault(user, [])
        prefixes.append(seen[::-1][:length])
        seen.append(item)
    return prefixes


@pytest.mark.parametrize("make_log", [synthetic_log, movielens_shaped], ids=["synthetic", "movielens-shaped"])
def test_every_position_sees_exactly_its_point_in_time_history(make_log):
    """The slots give every positive the history and ages ``UserLog`` (the skew-tested definition)
    builds for it: they differ on no query, where a plain causal prefix of the positives differs
    on many (repeats, non-engagements, equal timestamps, the 50-record limit)."""
    events = make_log()
    train = retrieval_positives(events)
    log = UserLog(events)
    examples = position_examples(train, log, HISTORY_LEN, ItemFields(), max_categories=4)
    assert examples[QUERY_MASK].sum() == len(train)
    times = train.event_times.tolist()
    truth = log.timed_tower_histories(train.user_ids.tolist(), times, HISTORY_LEN)
    truth_items, truth_ages = timed_rows(truth, times, HISTORY_LEN)
    histories, ages = read_back(examples)
    order = chunk_order(train)
    differ = sum(history != [item for item, _ in truth[row]] for history, row in zip(histories, order))
    assert differ == 0
    np.testing.assert_array_equal(ages, truth_ages[order])
    prefixes = plain_causal_prefix(train, HISTORY_LEN)
    assert sum(prefixes[row] != [item for item, _ in truth[row]] for row in range(len(train))) > len(train) // 20
    assert (truth_items != "").any()


@pytest.fixture(scope="module")
def split_data():
    events = synthetic_log()
    return events, retrieval_positives(events)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_chunk_encodes_each_query_as_the_served_tower_does(split_data, encoder):
    """``histories_at_positions`` (training) equals ``call``'s history (serving, export) on every query."""
    events, train = split_data
    params = dataclasses.replace(PARAMS, epochs=1, history_len=HISTORY_LEN, per_position=True,
                                 shape=dataclasses.replace(PARAMS.shape, encoder=encoder))
    model = TwoTowerRecommender(params)
    model.fit(train, None, events=events)
    tower = model.model.user_tower.towers[0]
    log = UserLog(events)
    examples = position_examples(train, log, HISTORY_LEN, ItemFields(), max_categories=4)
    chunks = {name: examples[name][:CHUNKS] for name in (SEQUENCE, SLOTS, HISTORY_AGE)}
    real = examples[QUERY_MASK][:CHUNKS]
    at_positions = tower.histories_at_positions(chunks, training=False).numpy()[real]
    rows = chunk_order(train)[: real.sum()]
    times = train.event_times[rows].tolist()
    items, ages = timed_rows(log.timed_tower_histories(train.user_ids[rows].tolist(), times, HISTORY_LEN), times, HISTORY_LEN)
    single = tower._history({HISTORY: tf.constant(items.astype(str)), HISTORY_AGE: tf.constant(ages)}, training=False).numpy()
    assert len(single) > 100 and np.abs(single).max() > 0
    np.testing.assert_allclose(at_positions, single, rtol=0, atol=1e-5)


def test_an_event_at_the_request_time_ages_like_the_youngest_one_training_sees():
    """History is strictly earlier than a training example, so on a log stamped in whole seconds the
    youngest age training sees is a second; a page requested at the user's last event must read
    that event in the same bucket, not in one training never taught."""
    now = 10_000_000
    ages = age_buckets(now, [now, now - 999, now - 1_000, now - 2_000, now - 3_000, now - 10**15])
    assert ages.tolist() == [1, 1, 1, 1, 2, AGE_BUCKETS - 1]
