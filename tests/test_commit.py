"""RedisFeatureStore.commit: a bundle's mutations and offsets land together, or not at all."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.definitions import Feature, Mutation, Op
from featurestore.commit import StaleBundle
from featurestore.redis_store import RedisFeatureStore
from kapparec.errors import KapparecError
from streams.topics import EVENTS
from transforms.mutations import merge_all

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


def test_a_bundle_with_one_bad_mutation_anywhere_applies_nothing(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    before = list(store.dump(version))
    many = [Mutation(Op.COUNT, Feature.POPULARITY, f"i{n}", "play|0", 1) for n in range(200)]
    for poison in (Mutation("bogus", Feature.POPULARITY, "i9", "play|0", 1),  # an op the merge does not know
                   Mutation(Op.ADD, Feature.OCCURRENCE, "", "i1"),  # a set op on an existing hash
                   Mutation(Op.ADD, Feature.POPULARITY, "i7", "play|0")):  # and on a hash the bundle creates
        with pytest.raises(KapparecError, match="nothing applied"):
            store.commit(version, [*many, poison], {(EVENTS, 0): 10}, {(EVENTS, 0): 20})
        assert list(store.dump(version)) == before
        assert not list(stack.redis().scan_iter(match=f"kr:{version}:stage:*"))


# A stored value each op must read to merge, made unreadable: (the bundle's last mutation, its key, field, value).
UNREADABLE = {
    "count": (Mutation(Op.COUNT, Feature.OCCURRENCE, "", "i1", 1), "occ:_", "i1", "many"),
    "max": (Mutation(Op.MAX, Feature.HIGH_WATER, "items", "0", 5), "high_water:items", "0", "late"),
    "latest": (Mutation(Op.LATEST, Feature.PROFILE, "u1", "region", "eu", order="0001"), "profile:u1", "region", "eu"),
    "distinct": (Mutation(Op.DISTINCT, Feature.TRENDING, "global|0", "i1|u1", 1, order="9999", limit=10),
                 "trending:global|0", "i1|u1", "once"),
    # the log clock, which every commit's compaction reads after its writes
    "clock": (Mutation(Op.COUNT, Feature.OCCURRENCE, "", "i2", 1), "high_water:events", "0", "noon"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_a_stored_value_the_merge_cannot_read_refuses_the_bundle_before_any_write(stack, case):
    mutation, key, field, value = UNREADABLE[case]
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    stack.redis().hset(f"kr:{version}:{key}", field, value)
    before = list(store.dump(version))
    many = [Mutation(Op.COUNT, Feature.POPULARITY, f"i{n}", "play|0", 1) for n in range(200)]  # merged first
    with pytest.raises(KapparecError, match="nothing applied"):
        store.commit(version, [*many, mutation], {(EVENTS, 0): 10}, {(EVENTS, 0): 20})
    assert list(store.dump(version)) == before


def test_advancing_offsets_never_rewinds_what_another_commit_moved_on(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 20})
    store.advance_offsets(version, {(EVENTS, 0): 12, (EVENTS, 1): 7})  # a bounded run that planned up to 12
    assert store.offsets(version) == {(EVENTS, 0): 20, (EVENTS, 1): 7}


def test_top_keeps_each_members_best_score_whatever_the_batch_order(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    high, low = (Mutation(Op.TOP, Feature.HISTORY, "u1", "i1", score, limit=5) for score in (9.0, 3.0))
    store.commit(version, [high], {(EVENTS, 0): None}, {(EVENTS, 0): 1})
    store.commit(version, [low], {(EVENTS, 0): 1}, {(EVENTS, 0): 2})
    assert stack.redis().zscore(f"kr:{version}:history:u1", "i1") == 9.0


def test_a_session_window_goes_once_its_own_partitions_high_water_reaches_its_closing(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    window = Mutation(Op.ADD, Feature.SESSION_ITEMS, "u1|1000", "i1", order="1\x1f5000")  # partition 1, closes at 5000
    committed = None

    def commit_high_water(partition: int, event_time: int, *mutations: Mutation) -> None:
        nonlocal committed
        high_water = Mutation(Op.MAX, Feature.HIGH_WATER, EVENTS, str(partition), event_time)
        store.commit(version, [high_water, *mutations], {(EVENTS, 0): committed}, {(EVENTS, 0): (committed or 0) + 1})
        committed = (committed or 0) + 1

    key = f"kr:{version}:session_items:u1|1000"
    commit_high_water(1, 4999, window)
    assert stack.redis().smembers(key) == {b"i1"}
    commit_high_water(0, 9000)  # another partition's log time closes nothing here
    assert stack.redis().smembers(key) == {b"i1"}
    commit_high_water(1, 5000)
    assert not stack.redis().exists(key)
    assert not stack.redis().zcard(f"kr:{version}:closing:1")
    assert not [line for line in store.dump(version) if "session_items" in line]


def test_a_malformed_expiry_or_closing_of_a_set_is_refused_with_nothing_applied(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    for closing in ("soon", "x\x1f5000", "1\x1fsoon"):
        with pytest.raises(KapparecError, match="nothing applied"):
            store.commit(version, [*PLAY, Mutation(Op.ADD, Feature.SESSION_ITEMS, "u1|1000", "i1", order=closing)],
                         {(EVENTS, 0): None}, {(EVENTS, 0): 1})
    assert store.offsets(version) == {}


MEMBERS = st.sampled_from(["a", "b", "c", "d"])
MUTATIONS = st.one_of(
    st.builds(lambda e, f, v: Mutation(Op.COUNT, "cnt", e, f, v), MEMBERS, MEMBERS, st.integers(-5, 5)),
    st.builds(lambda e, f: Mutation(Op.ADD, "set", e, f), MEMBERS, MEMBERS),
    st.builds(lambda e, f, v: Mutation(Op.TOP, "top", e, f, float(v), limit=2), MEMBERS, MEMBERS, st.integers(0, 9)),
    st.builds(lambda e, f, o, v: Mutation(Op.LATEST, "last", e, f, v, order=f"{o:03d}"), MEMBERS, MEMBERS,
              st.integers(0, 3), MEMBERS),  # few orders: ties that the payload must break
    st.builds(lambda e, f, v: Mutation(Op.MAX, "max", e, f, v), MEMBERS, MEMBERS, st.integers(0, 50)),
    st.builds(lambda e, f, v: Mutation(Op.TALLY, "tally", e, f, v), MEMBERS, MEMBERS, st.integers(1, 5)),
    # a small cap, so actors cross it in some splits within a batch and in others across batches
    st.builds(lambda e, m, a, v: Mutation(Op.DISTINCT, "dist", e, f"{m}|{a}", v, "9999", 4), MEMBERS, MEMBERS, MEMBERS,
              st.integers(1, 3)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(MUTATIONS, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_any_split_merged_by_the_real_lua_merge_equals_one_merge_of_the_whole(stack, mutations, cuts):
    """The split-invariance property of ``transforms.mutations``, through merge.lua itself."""
    store = RedisFeatureStore(stack.redis_url)
    whole, split = store.create_version("whole"), store.create_version("split")
    store.commit(whole, merge_all(mutations), {(EVENTS, 0): None}, {(EVENTS, 0): 1})
    bounds = [0, *sorted(c for c in cuts if c <= len(mutations)), len(mutations)]
    committed = None
    for n, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        store.commit(split, merge_all(mutations[start:stop]), {(EVENTS, 0): committed}, {(EVENTS, 0): n + 1})
        committed = n + 1
    strip = lambda lines: [line for line in lines if not line.startswith('{"key":"offsets"')]  # noqa: E731
    assert strip(store.dump(split)) == strip(store.dump(whole))
    store.drop_version(whole)
    store.drop_version(split)
