"""UserHistory: recent history (trimmed), seen items, dislike and watch-progress state."""

from __future__ import annotations

from featurestore.definitions import Feature, Mutation, Op, history_member, parse_history_member, tower_history
from tests.transforms_helpers import DAY0, assert_feature, interaction
from transforms.config import FeatureConfig
from transforms.history import UserHistory
from transforms.mutations import log_order


def check(events, feature, expected, history_length=50):
    assert_feature(UserHistory(FeatureConfig(history_length=history_length)), events, feature, expected)


def test_history_keeps_the_latest_members_and_skips_impressions():
    events = [interaction(f"i{n}", "play", DAY0 + n, offset=n) for n in range(5)]
    events.append(interaction("i9", "impression", DAY0 + 99, offset=5))
    expected = [
        Mutation(Op.TOP, Feature.HISTORY, "u1", f"i{n}|play|{DAY0 + n}|0|{n}", float(DAY0 + n), limit=3) for n in (2, 3, 4)
    ]
    check(events, Feature.HISTORY, expected, history_length=3)


def check_seen(events, expected, seen_limit=2_000):
    assert_feature(UserHistory(FeatureConfig(seen_limit=seen_limit)), events, Feature.SEEN, expected)


def seen(item, time, limit=2_000):
    return Mutation(Op.TOP, Feature.SEEN, "u1", item, float(time), limit=limit)


def test_seen_is_every_item_but_impressions_at_its_latest_engagement():
    events = [interaction("i1", "click", DAY0 + 5), interaction("i1", "view", DAY0 + 1, offset=1),
              interaction("i2", "impression", DAY0 + 9, offset=2)]
    check_seen(events, [seen("i1", DAY0 + 5)])


def test_seen_keeps_the_items_engaged_with_latest_up_to_its_limit():
    events = [interaction(f"i{n}", "play", DAY0 + 10 * n, offset=n) for n in range(6)]
    events.append(interaction("i0", "complete", DAY0 + 100, offset=6))  # an old item engaged with again
    check_seen(events, [seen("i0", DAY0 + 100, 3), seen("i4", DAY0 + 40, 3), seen("i5", DAY0 + 50, 3)], seen_limit=3)


def test_a_later_like_or_high_rating_takes_a_dislike_back():
    dislike = interaction("i1", "dislike", DAY0 + 1, offset=0)
    like_before = interaction("i1", "like", DAY0, offset=1)  # older in event time: loses
    rated = interaction("i2", "rate", DAY0 + 5, value=4.5, offset=2)
    low_rating = interaction("i3", "rate", DAY0 + 5, value=2.0, offset=3)
    expected = [
        Mutation(Op.LATEST, Feature.DISLIKED, "u1", "i1", "1", order=log_order(dislike)),
        Mutation(Op.LATEST, Feature.DISLIKED, "u1", "i2", "0", order=log_order(rated)),
    ]
    check([dislike, like_before, rated, low_rating], Feature.DISLIKED, expected)


def test_progress_is_the_latest_watch_state():
    complete = interaction("i1", "complete", DAY0 + 10, offset=1)
    events = [interaction("i1", "play", DAY0, offset=0), complete, interaction("i1", "progress", DAY0 + 5, value=0.5, offset=2)]
    restarted = interaction("i2", "play", DAY0 + 20, offset=4)
    events += [interaction("i2", "progress", DAY0 + 10, value=0.75, offset=3), restarted]
    expected = [
        Mutation(Op.LATEST, Feature.PROGRESS, "u1", "i1", "1", order=log_order(complete)),
        Mutation(Op.LATEST, Feature.PROGRESS, "u1", "i2", "0", order=log_order(restarted)),
    ]
    check(events, Feature.PROGRESS, expected)


def test_late_records_still_count_for_user_state():
    late = interaction("i1", "click", DAY0, offset=1, log_watermark=DAY0 + 10 * 24 * 3600 * 1000)
    check_seen([late], [seen("i1", DAY0)])


def test_profile_is_the_latest_region_of_any_record_impressions_included():
    older = interaction("i1", "play", DAY0, region="eu", offset=0)
    newest = interaction("i2", "impression", DAY0 + 5, region="us", offset=1)
    no_region = interaction("i3", "click", DAY0 + 9, offset=2)
    expected = [Mutation(Op.LATEST, Feature.PROFILE, "u1", "region", "us", order=log_order(newest))]
    check([older, newest, no_region], Feature.PROFILE, expected)


def test_tower_history_is_distinct_engagements_newest_first():
    entries = [("a", "play"), ("b", "dislike"), ("c", "click"), ("a", "complete"), ("d", "rate"), ("e", "view")]
    assert tower_history(entries, length=3) == ["a", "c", "d"]
    assert tower_history(entries, length=10) == ["a", "c", "d", "e"]


def test_a_history_member_parses_back_even_with_a_separator_in_the_item_id():
    member = history_member("odd|id", "play", 42, 1, 7)
    assert parse_history_member(member) == ("odd|id", "play", 42)
