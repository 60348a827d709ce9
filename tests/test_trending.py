"""Trending that one actor cannot move, read cheaply from per-hour rankings, and kept only for its retention."""

from __future__ import annotations

from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
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


def test_hours_past_their_retention_are_compacted_alike_in_a_stream_and_a_backfill(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=60, items=40, events=3000, seed=4, days=10))
    config = FeatureConfig(trending_retention_ms=2 * 24 * 3_600_000)
    stream(stack.bootstrap, stack.redis_url, config, once=True, max_batch_records=200)
    store = RedisFeatureStore(stack.redis_url)
    streamed = list(store.dump(store.require_current_version()))
    version, _ = backfill(stack.bootstrap, stack.redis_url, config, progress=False)
    assert list(store.dump(version)) == streamed
    reader = FeatureReader(stack.redis_url, version)
    hours = {int(line.split('|', 1)[1].split('"', 1)[0]) for line in streamed if line.startswith('{"key":"trending_rank:global|')}
    assert hours and min(hours) >= reader.log_clock_ms() - config.trending_retention_ms  # older hours are gone
    assert len(hours) <= 48
