"""UserLog: the user tower's inputs at any moment, exactly as the Beam transform would have stored them."""

from __future__ import annotations

import numpy as np

from featurestore.definitions import Feature, parse_history_member, timed_tower_history
from streams.schema import Interaction
from training.data import Interactions
from training.tower_inputs import UserLog
from transforms.config import FeatureConfig
from transforms.history import user_state_mutations
from transforms.mutations import merge_all

TYPES = ("play", "click", "impression", "dislike", "complete", "rate")


def test_history_excludes_the_event_itself_later_and_same_time_events_and_other_users():
    rows = Interactions.from_columns(["u", "u", "v", "u", "u", "u"], ["a", "b", "x", "c", "d", "e"], [10, 20, 20, 30, 30, 40])
    log = UserLog(rows)
    timed = log.timed_tower_histories(rows.user_ids.tolist(), rows.event_times.tolist(), length=3)
    before = {item: [entry for entry, _ in history] for item, history in zip(rows.item_ids, timed)}
    assert before["a"] == []
    assert before["b"] == ["a"]
    assert before["x"] == []  # another user's items never leak in
    assert before["c"] == before["d"] == ["b", "a"]  # c and d share a timestamp
    assert before["e"] == ["d", "c", "b"]  # newest first (equal times ordered by member), at most 3
    assert log.tower_history("u", length=10) == ["e", "d", "c", "b", "a"]
    assert log.timed_tower_history("u", length=10) == [("e", 40), ("d", 30), ("c", 30), ("b", 20), ("a", 10)]


def random_log(seed: int, n: int = 300) -> list[Interaction]:
    rng = np.random.default_rng(seed)
    return [
        Interaction(
            user_id=str(rng.choice(["u1", "u2", "u3"])),
            item_id=f"i{rng.integers(0, 25)}",  # repeats of an item
            event_type=str(rng.choice(TYPES)),
            value=4.0,
            event_time=int(rng.integers(0, 80)),  # many equal timestamps
            region=str(rng.choice(["", "eu", "us"])),
            device=str(rng.choice(["", "tv", "phone"])),
            session_id="",
            partition=int(rng.integers(0, 2)),
            offset=offset,
        )
        for offset in range(n)
    ]


def stored_tower_history(events: list[Interaction], record_limit: int, length: int) -> list[tuple[str, int]]:
    """What FeatureReader.timed_tower_history would read after the Beam extractor stored ``events``."""
    config = FeatureConfig(history_length=record_limit)
    merged = merge_all(m for event in events for m in user_state_mutations(config, event))
    top = sorted(((m.value, m.field) for m in merged if m.feature == Feature.HISTORY), reverse=True)
    return timed_tower_history((parse_history_member(member) for _, member in top), length)


def test_point_in_time_history_equals_the_beam_extractor_replayed_over_the_earlier_records():
    events = random_log(seed=3)
    log = UserLog(Interactions.from_events(events), record_limit=8)
    for user in ("u1", "u2", "u3"):
        for before_ms in (0, 17, 40, 41, 79, 200):
            earlier = [e for e in events if e.user_id == user and e.event_time < before_ms]
            assert log.timed_tower_history(user, 5, before_ms) == stored_tower_history(earlier, record_limit=8, length=5)


def test_profile_equals_what_the_beam_extractor_stores():
    events = random_log(seed=5)
    profiles = UserLog(Interactions.from_events(events)).profiles()
    merged = merge_all(m for event in events for m in user_state_mutations(FeatureConfig(), event))
    stored = {(m.entity, m.field): m.value for m in merged if m.feature == Feature.PROFILE}
    for user in ("u1", "u2", "u3"):
        assert profiles[user] == {name: stored.get((user, name), "") for name in ("region", "device")}
