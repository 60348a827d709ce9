"""Trending and popular lists refreshed from the open hours alone equal a read of every hour."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import layout
from featurestore.definitions import GLOBAL_SCOPE, Feature, window_entity
from featurestore.reader import FeatureReader
from kapparec.timeunits import HOUR_MS
from serving.settled import decayed_rankings
from streams import topics

VERSION = "v1"
DECAYS = [(6.0, 72), (168.0, 24 * 30)]
LATENESS_MS = 6 * HOUR_MS  # the default allowed lateness, which a version without pinned settings has
START_MS = 2_000 * HOUR_MS + 1_234_567
N = 50


def _write_hours(client, rng: random.Random, hours: list[int]) -> None:
    """Random distinct-user counts (0 included: an item whose actors were all bots) in each of ``hours``."""
    for hour in hours:
        counts = {f"i{rng.randrange(300)}": rng.randrange(0, 6) for _ in range(rng.randrange(1, 12))}
        client.zadd(layout.feature_key(VERSION, Feature.TRENDING_RANK, window_entity(GLOBAL_SCOPE, hour)), counts)


def _read_partitions(client, high_waters: dict[int, int | None]) -> None:
    """Partitions the store has read, with their high water (None: only refused records so far)."""
    for partition, high_water in high_waters.items():
        client.hset(layout.offsets_key(VERSION), layout.offset_field(topics.EVENTS, partition), 1)
        if high_water is not None:
            client.hset(layout.feature_key(VERSION, Feature.HIGH_WATER, topics.EVENTS), str(partition), high_water)


def _hours_before(now_ms: int, count: int) -> list[int]:
    return [now_ms - now_ms % HOUR_MS - h * HOUR_MS for h in range(count)]


def _zrevrange_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_zrevrange", {}).get("calls", 0))


def assert_same_ranking(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """The same scores rank by rank, and the same item wherever its score is its own (summed in
    another order, equal scores may swap, and the list may be cut at another of them)."""
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-9)
    scores = [round(score, 9) for _, score in expected]
    own = [rank for rank, score in enumerate(scores) if scores.count(score) == 1]
    assert [got[rank][0] for rank in own] == [expected[rank][0] for rank in own]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lag_hours=st.integers(0, 30),
       steps_ms=st.lists(st.integers(0, 40 * 60_000), min_size=1, max_size=4))
def test_a_refresh_from_the_open_hours_equals_a_read_of_every_hour(session_stack, seed, lag_hours, steps_ms):
    client = session_stack.redis()
    client.flushall()
    rng = random.Random(seed)
    reader = FeatureReader(session_stack.redis_url, VERSION)
    now_ms, settled = START_MS, None
    _write_hours(client, rng, _hours_before(now_ms, 24 * 31))
    for step_ms in [0, *steps_ms]:
        now_ms += step_ms
        _read_partitions(client, {0: now_ms, 1: now_ms - lag_hours * HOUR_MS})
        boundary = reader.settled_before_ms()
        assert boundary == now_ms - lag_hours * HOUR_MS - LATENESS_MS  # the lowest high water, less the lateness
        _write_hours(client, rng, [hour for hour in _hours_before(now_ms, 48) if hour + HOUR_MS > boundary])
        rankings, settled = decayed_rankings(reader, GLOBAL_SCOPE, N, DECAYS, now_ms, boundary, settled)
        for got, expected in zip(rankings, reader.decayed_rankings(GLOBAL_SCOPE, N, DECAYS, now_ms), strict=True):
            assert_same_ranking(got, expected)


def test_a_refresh_within_the_hour_reads_only_the_open_hours(session_stack):
    client = session_stack.redis()
    client.flushall()
    reader = FeatureReader(session_stack.redis_url, VERSION)
    _write_hours(client, random.Random(0), _hours_before(START_MS, 24 * 31))
    _read_partitions(client, {0: START_MS, 1: START_MS - HOUR_MS})
    boundary = reader.settled_before_ms()
    _, settled = decayed_rankings(reader, GLOBAL_SCOPE, N, DECAYS, START_MS, boundary, None)

    before = _zrevrange_calls(client)
    decayed_rankings(reader, GLOBAL_SCOPE, N, DECAYS, START_MS + 60_000, boundary, settled)
    open_hours = [hour for hour in _hours_before(START_MS, 24 * 30) if hour + HOUR_MS > boundary - boundary % HOUR_MS]
    assert _zrevrange_calls(client) - before == len(open_hours) == 8  # this hour, the lag's and the lateness's


def test_a_partition_without_a_high_water_settles_nothing(session_stack):
    client = session_stack.redis()
    client.flushall()
    reader = FeatureReader(session_stack.redis_url, VERSION)
    _read_partitions(client, {0: START_MS})
    assert reader.settled_before_ms() == START_MS - LATENESS_MS
    _read_partitions(client, {1: None})  # its first valid record is never late, whatever its time
    assert reader.settled_before_ms() is None

    _write_hours(client, random.Random(1), _hours_before(START_MS, 24 * 31))
    before = _zrevrange_calls(client)
    _, settled = decayed_rankings(reader, GLOBAL_SCOPE, N, DECAYS, START_MS, None, None)
    decayed_rankings(reader, GLOBAL_SCOPE, N, DECAYS, START_MS + 60_000, None, settled)
    assert _zrevrange_calls(client) - before == 2 * 24 * 30  # every hour of the horizon, at each refresh
