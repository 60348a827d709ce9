"""RedisFeatureStore.commit: a bundle's mutations and offsets land together, or not at all."""

from __future__ import annotations

import pytest

from featurestore.definitions import Feature, Mutation, Op
from featurestore.redis_store import RedisFeatureStore, StaleBundle
from streams.topics import EVENTS

PLAY = [Mutation(Op.COUNT, Feature.OCCURRENCE, "", "i1", 2)]


def test_a_replayed_bundle_is_refused_with_nothing_applied(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    before = list(store.dump(version))

    with pytest.raises(StaleBundle):  # the same bundle again: its offsets moved on
        store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    with pytest.raises(StaleBundle):  # a stale bundle from before the last commit
        store.commit(version, PLAY, {(EVENTS, 0): 5}, {(EVENTS, 0): 12})

    assert list(store.dump(version)) == before
    assert store.offsets(version) == {(EVENTS, 0): 10}
    assert not list(stack.redis().scan_iter(match=f"kr:{version}:stage:*"))


def test_the_next_bundle_commits_from_where_the_last_ended(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    store.commit(version, PLAY, {(EVENTS, 0): 10}, {(EVENTS, 0): 20})
    assert store.offsets(version) == {(EVENTS, 0): 20}
    assert stack.redis().hget(f"kr:{version}:occ:_", "i1") == b"4"
