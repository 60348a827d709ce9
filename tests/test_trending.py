"""Windowed features: trending that one actor cannot move, per-bucket popularity and affinity read
back exactly, and every window kept only for its retention in log time."""

from __future__ import annotations

import json

from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from kapparec.timeunits import DAY_MS, HOUR_MS
from streams.schema import encode, parse_interaction
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from transforms.config import FeatureConfig
from transforms.jobs import backfill, stream

LOG = dict(users=120, items=80, events=6000, seed=9)


def rankings(redis_url: str, version: str) -> dict[str, list[str]]:
    reader = FeatureReader(redis_url, version)
    scopes = ["global", *(f"region:{r}" for r in reader.trending_regions())]
    return {scope: [item for item, _ in reader.trending(scope, n=10, horizon_hours=48)] for scope in scopes}


def test_a_bot_burst_moves_no_trending_list_and_its_actors_are_named(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(**LOG))
    organic, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    before = rankings(stack.redis_url, organic)

    botted = SyntheticLog(**LOG, bots=0.5)  # 3,000 plays from 3 accounts on 2 items in one hour
    produce_synthetic(stack.bootstrap, botted, records=list(botted.records())[-botted.bot_events:], catalog=False)
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    after = rankings(stack.redis_url, version)

    assert after == before and all(after.values())
    assert not set(botted.bot_items) & {item for ranked in after.values() for item in ranked}
    suspects = FeatureReader(stack.redis_url, version).suspects(min_events=100, horizon_hours=48)
    assert set(suspects) == set(botted.bot_users) and min(suspects.values()) >= 400


def test_windows_past_their_retention_are_compacted_alike_in_a_stream_and_a_backfill(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=60, items=40, events=3000, seed=4, days=10))
    retention = 2 * DAY_MS
    config = FeatureConfig(trending_retention_ms=retention, popularity_retention_ms=retention,
                           affinity_retention_ms=retention, attribution_retention_ms=retention)
    stream(stack.bootstrap, stack.redis_url, config, once=True, max_batch_records=200)
    store = RedisFeatureStore(stack.redis_url)
    streamed = list(store.dump(store.require_current_version()))
    version, _ = backfill(stack.bootstrap, stack.redis_url, config, progress=False)
    assert list(store.dump(version)) == streamed
    clock = FeatureReader(stack.redis_url, version).log_clock_ms()
    for feature in ("trending_rank", "trending", "popularity", "affinity", "responded"):
        buckets = {int(json.loads(line)["key"].rsplit("|", 1)[1]) for line in streamed
                   if line.startswith(f'{{"key":"{feature}:')}
        assert buckets and min(buckets) >= clock - retention, feature  # older buckets are gone
    assert_only_open_session_windows_remain(stack.redis(), version, config)


def assert_only_open_session_windows_remain(client, version: str, config: FeatureConfig) -> None:
    """Every stored session window is indexed, still open in its partition's log time, and young."""
    high_water = {p.decode(): int(v) for p, v in client.hgetall(f"kr:{version}:high_water:events").items()}
    open_windows = {member.decode(): (partition, closes_at)
                    for partition in high_water
                    for member, closes_at in client.zrange(f"kr:{version}:closing:{partition}", 0, -1, withscores=True)}
    stored = {key.decode().split(":", 2)[2] for key in client.scan_iter(match=f"kr:{version}:session_items:*")}
    assert stored and stored == set(open_windows)
    for window, (partition, closes_at) in open_windows.items():
        assert closes_at > high_water[partition], window
        start = int(window.rsplit("|", 1)[1])
        assert start > high_water[partition] - config.session_window_ms - config.allowed_lateness_ms, window


def test_popularity_and_affinity_read_back_what_the_log_holds(stack):
    log = SyntheticLog(users=30, items=25, events=2000, seed=6)
    produce_synthetic(stack.bootstrap, log)
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    reader, config = FeatureReader(stack.redis_url, version), FeatureConfig()
    now = reader.log_clock_ms()
    events = [e for e in log.interactions()]
    item = max(log.item_categories, key=lambda i: sum(e.item_id == i for e in events))
    expected_counts: dict[str, int] = {}
    for event in events:
        if event.item_id == item and event.event_time - event.event_time % DAY_MS > now - 7 * DAY_MS:
            expected_counts[event.event_type.value] = expected_counts.get(event.event_type.value, 0) + 1
    assert reader.popularity(item, days=7) == expected_counts and expected_counts
    per_day: dict[int, int] = {}
    for event in events:
        bucket = event.event_time - event.event_time % DAY_MS
        if event.item_id == item and bucket > now - 7 * DAY_MS:
            per_day[bucket] = per_day.get(bucket, 0) + 1
    over_time = reader.popularity_over_time(item, days=7)
    assert [bucket for bucket, _ in over_time] == [now - now % DAY_MS - d * DAY_MS for d in range(6, -1, -1)]
    assert {bucket: sum(counts.values()) for bucket, counts in over_time if counts} == per_day

    # Every item is among each hour's candidates in a catalog this small, so the hourly counts
    # behind a sparkline, decayed, add up to the trending score itself.
    ranked = reader.trending("global", n=10, half_life_hours=6.0, horizon_hours=24)
    assert ranked
    for trending_item, score in ranked:
        hourly = reader.hourly_trending("global", [trending_item], hours=24)[trending_item]
        decayed = sum(users * 0.5 ** ((now - (now - now % HOUR_MS - age * HOUR_MS)) / HOUR_MS / 6.0)
                      for age, users in enumerate(reversed(hourly)))
        assert abs(decayed - score) < 1e-9 and hourly[-1] >= 0

    user = events[0].user_id
    per_category: dict[str, float] = {}
    for event in events:
        bucket = event.event_time - event.event_time % DAY_MS
        weight = config.weight(parse_interaction(encode(event)))
        if event.user_id == user and weight and bucket > now - config.affinity_retention_ms:
            for category in log.item_categories[event.item_id]:
                per_category[category] = per_category.get(category, 0.0) + weight * 0.5 ** ((now - bucket) / DAY_MS / 14)
    total = sum(per_category.values())
    affinity = reader.category_affinity(user)
    assert affinity.keys() == per_category.keys()
    assert all(abs(affinity[c] - per_category[c] / total) < 1e-9 for c in affinity)
