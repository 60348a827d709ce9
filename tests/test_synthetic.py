"""SyntheticLog without a broker: deterministic, exact counts, contract-valid, and the planted structure is there."""

from __future__ import annotations

from collections import Counter

import pytest

from kapparec.errors import KapparecError
from streams.schema import InvalidRecord, encode, parse_catalog, parse_interaction
from streams.synthetic import MALFORMED_KINDS, SyntheticLog


@pytest.fixture(scope="module")
def log() -> SyntheticLog:
    return SyntheticLog(users=200, items=300, events=20_000, seed=11)


def test_exact_counts_and_ids(log):
    records = list(log.records())
    assert len(records) == 20_000 and all(r.valid for r in records)
    assert len(log.catalog()) == 300
    assert all(r.key.decode().startswith("u") for r in records)
    assert {e.item_id for e in log.catalog()} == {f"i{n}" for n in range(300)}


def test_same_seed_same_bytes_other_seed_differs():
    def dump(seed: int) -> list:
        generated = SyntheticLog(users=50, items=40, events=2_000, seed=seed, malformed_share=0.05)
        return list(generated.catalog_records()) + list(generated.records())

    assert dump(3) == dump(3)
    assert dump(3) != dump(4)


def test_records_are_the_schema_encoding_of_the_events(log):
    events = list(log.interactions())
    records = list(log.records())
    assert [encode(e) for e in events] == [r.value for r in records]
    for record in records[:500]:
        parse_interaction(record.value, log_time_ms=record.timestamp_ms)
    for record in log.catalog_records():
        assert parse_catalog(record.value).created_at == record.timestamp_ms


def test_malformed_share_is_exact_and_every_kind_fails():
    generated = SyntheticLog(users=50, items=40, events=3_000, seed=5, malformed_share=0.02)
    assert generated.malformed_count == 60
    assert set(generated.malformed_kinds) == set(MALFORMED_KINDS)
    failed, reasons = 0, Counter()
    for record in generated.records():
        try:
            parse_interaction(record.value, log_time_ms=record.timestamp_ms)
            assert record.valid
        except InvalidRecord as exc:
            assert not record.valid
            failed += 1
            reasons[exc.reason.split(":")[0]] += 1
    assert failed == 60
    assert {"bad_json", "missing", "int_type", "enum", "oversized", "future_event_time"} == set(reasons)
    assert sum(1 for _ in generated.interactions()) == 3_000 - 60


def test_users_concentrate_on_their_cluster_categories(log):
    categories = log.item_categories
    per_user: dict[str, list[bool]] = {}
    for event in log.interactions():
        cluster = set(log.cluster_categories(log.user_cluster(event.user_id)))
        per_user.setdefault(event.user_id, []).append(bool(cluster & set(categories[event.item_id])))
    shares = [sum(hits) / len(hits) for hits in per_user.values() if len(hits) >= 20]
    # Two of sixteen categories would catch ~25% of events by chance (items carry 1-3 categories).
    assert len(shares) > 100 and sorted(shares)[len(shares) // 2] > 0.7


def test_taste_shows_in_ratings(log):
    categories = log.item_categories
    ratings: dict[bool, list[float]] = {True: [], False: []}
    for event in log.interactions():
        # The trending item is liked beyond its usual audience, on purpose.
        if event.event_type.value == "rate" and event.item_id != log.trending.item_id:
            in_taste = bool(set(log.cluster_categories(log.user_cluster(event.user_id))) & set(categories[event.item_id]))
            ratings[in_taste].append(event.value)
    assert ratings[True] and ratings[False]
    assert min(ratings[True]) > max(ratings[False])


def test_trending_item_spikes_in_its_window_and_region(log):
    trend = log.trending
    inside, outside, regions = 0, 0, Counter()
    for event in log.interactions():
        if event.item_id == trend.item_id:
            if trend.start_ms <= event.event_time < trend.end_ms:
                inside += 1
                regions[event.context.region] += 1
            else:
                outside += 1
    window_share = (trend.end_ms - trend.start_ms) / (log.end_ms - log.start_ms)
    assert inside > 50 * window_share * (inside + outside)  # far above its share of time
    assert regions.most_common(1)[0][0] == trend.region and regions[trend.region] > inside / 2


def test_releases_regions_sessions_and_late_data(log):
    sessions: dict[str, set[str]] = {}
    for event in log.interactions():
        assert event.event_time >= log.item_created_at(event.item_id)
        assert log.item_region(event.item_id) in (None, event.context.region)
        assert event.context.region == log.user_region(event.user_id)
        sessions.setdefault(event.context.session_id, set()).add(event.user_id)
    assert all(len(users) == 1 for users in sessions.values())
    assert len(sessions) < 20_000 / 2  # events come in bursts, not one per session
    released_later = [e for e in log.catalog() if e.created_at > log.start_ms]
    assert released_later, "some items are released during the log"

    times = [r.timestamp_ms for r in log.records()]
    assert times == sorted(times)  # the log is in arrival order...
    event_times = [e.event_time for e in log.interactions()]
    late = sum(1 for before, after in zip(event_times, event_times[1:]) if after < before - 60_000)
    assert 0 < late < len(event_times) * 0.05  # ...with a little late data in event time


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"users": 0}, "users must be at least 1"),
        ({"items": -2}, "items must be at least 1"),
        ({"events": -1}, "events cannot be negative"),
        ({"malformed_share": 1.5}, "malformed share"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(KapparecError, match=message):
        SyntheticLog(**{"users": 10, "items": 10, "events": 10, "seed": 1, **arguments})


def test_tiny_logs_still_work():
    assert list(SyntheticLog(users=1, items=1, events=0, seed=1).records()) == []
    tiny = SyntheticLog(users=1, items=1, events=7, seed=1)
    assert len(list(tiny.records())) == 7 and len(tiny.catalog()) == 1


@pytest.mark.parametrize("bots", [0.0, 0.05])
def test_a_log_ending_at_a_time_is_the_log_pinned_at_its_start(bots):
    end_ms = 1_800_000_123_456
    shape = dict(users=30, items=40, events=900, seed=8, malformed_share=0.02, bots=bots)
    ending = SyntheticLog.ending_at(end_ms, **shape)
    assert ending.last_log_time_ms == end_ms
    assert max(r.timestamp_ms for r in ending.records()) == end_ms
    pinned = SyntheticLog(start_ms=ending.start_ms, **shape)
    assert list(ending.records()) == list(pinned.records())
    assert ending.catalog() == pinned.catalog()
    assert ending.trending == pinned.trending
