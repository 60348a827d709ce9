"""No training/serving skew: what the training builder feeds the user tower at the log's end (the
history's items and their event times, which the tower ages) is what ``FeatureReader`` serves, for
every user of a synthetic log (real broker, real Redis, real backfill)."""

from __future__ import annotations

from featurestore.reader import FeatureReader
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog
from streams.topics import ensure_topics
from training.replay import replay_log
from training.tower_inputs import UserLog
from training.two_tower.train import UserState
from transforms.config import FeatureConfig
from transforms.jobs import backfill


def test_the_tower_inputs_built_for_training_equal_what_serving_reads(stack):
    ensure_topics(stack.bootstrap)
    log = SyntheticLog(users=80, items=150, events=6_000, seed=11)
    with LogProducer(stack.bootstrap) as producer:
        for item in log.catalog():
            producer.send_catalog(item)
        for event in log.interactions():
            producer.send_interaction(event)
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    reader = FeatureReader(stack.redis_url)
    interactions, _, _ = replay_log(stack.bootstrap)
    user_log = UserLog(interactions, record_limit=FeatureConfig().history_length)
    users = sorted(set(interactions.user_ids.tolist()))
    assert len(users) == 80
    for length in (10, 50):
        state = UserState.at_cutoff(user_log, length)
        for user in users:
            served = reader.timed_tower_history(user, length)
            assert state.histories[user] == served, user
            assert [item for item, _ in served] == reader.tower_history(user, length), user
            assert reader.profile(user) == {"region": state.regions[user], "device": state.devices[user]}, user
    # The check has teeth: histories hold several items (funnels repeat items, so 50 records give
    # fewer distinct engagements), and regions and devices are set.
    state = UserState.at_cutoff(user_log, 50)
    assert sum(len(h) for h in state.histories.values()) > 5 * len(users)
    assert len({time for h in state.histories.values() for _, time in h}) > 5 * len(users)
    assert all(state.regions[u] and state.devices[u] for u in users)
