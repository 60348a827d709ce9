"""The features of a part of the log, replayed through the feature pipeline (real brokers, Redis, backfills)."""

from __future__ import annotations

import numpy as np

from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from training.cli import split_of
from training.feature_replay import replayed_features
from training.replay import replay_log
from transforms.jobs import backfill


def _backfilled_synthetic_log(stack) -> str:
    produce_synthetic(stack.bootstrap, SyntheticLog(users=60, items=120, events=5_000, seed=5))
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    return version


def test_replaying_the_whole_log_rebuilds_the_backfilled_store_exactly(stack):
    version = _backfilled_synthetic_log(stack)
    interactions, catalog, _ = replay_log(stack.bootstrap)
    with replayed_features(interactions, catalog) as replayed:
        rebuilt = list(RedisFeatureStore(replayed.redis_url).dump(replayed.version))
    original = list(RedisFeatureStore(stack.redis_url).dump(version))
    assert len(original) > 1_000
    assert rebuilt == original


def test_the_replayed_training_part_knows_nothing_held_out(stack):
    version = _backfilled_synthetic_log(stack)
    interactions, catalog, _ = replay_log(stack.bootstrap)
    split = split_of(interactions, catalog)
    kept = set(zip(split.events.partitions.tolist(), split.events.offsets.tolist()))
    cut = ~np.array([pair in kept for pair in zip(interactions.partitions.tolist(), interactions.offsets.tolist())])
    first_cut: dict[str, int] = {}
    for user, time in zip(interactions.user_ids[cut].tolist(), interactions.event_times[cut].tolist()):
        first_cut[user] = min(time, first_cut.get(user, time))
    assert len(split.test) >= 4 and set(split.test) == set(first_cut)
    whole = FeatureReader(stack.redis_url, version)
    with replayed_features(split.events, catalog) as replayed:
        reader = replayed.reader()
        for user, cut_at in first_cut.items():
            history = reader.history(user, 50)
            assert history and max(entry.event_time for entry in history) < cut_at, user
            assert reader.history(user, 50) != whole.history(user, 50), user
        untouched = sorted(set(interactions.user_ids.tolist()) - set(first_cut))
        assert untouched
        for user in untouched:
            assert reader.history(user, 50) == whole.history(user, 50), user
            assert reader.seen(user) == whole.seen(user), user
