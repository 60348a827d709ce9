"""The attribution join and the A/B statistics as pure functions, and the join over the stored facts
(the loop test in tests/test_serving.py runs them live)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.attribution import Outcome, Shown, attribute, read_outcomes, responded_member, shown_member
from featurestore.definitions import Feature, Mutation, Op
from featurestore.redis_store import RedisFeatureStore
from kapparec.timeunits import DAY_MS
from streams.schema import Impression
from streams.topics import EVENTS
from tests.transforms_helpers import interaction
from transforms.attribution import add_responses, impression_mutations
from transforms.config import FeatureConfig
from transforms.extract import EventBatch
from transforms.mutations import MergedMutations
from serving.experiment_report import NOT_ENOUGH_DATA, build_report, two_proportion_p_value, wilson

MIN = 60_000


def shown(request_id: str, at: int, bucket: str = "exp/a", position: int = 1, user: str = "u1") -> Shown:
    return Shown(user, "i1", at, request_id, bucket, position, "two_tower")


def test_a_response_goes_to_its_request_else_to_the_latest_impression_within_the_window():
    impressions = [shown("r1", 0), shown("r2", 10 * MIN), shown("r3", 100 * MIN)]
    outcomes = attribute(impressions, [(11 * MIN, "click", ""), (200 * MIN, "purchase", "r1")], window_ms=30 * MIN)
    assert [(o.shown.request_id, o.clicked, o.converted) for o in outcomes] == [
        ("r1", True, True), ("r2", True, False), ("r3", False, False)]


def test_a_response_outside_every_window_or_before_the_impression_is_not_attributed():
    outcomes = attribute([shown("r1", 60 * MIN)], [(59 * MIN, "click", ""), (91 * MIN, "play", "")], window_ms=30 * MIN)
    assert [(o.clicked, o.converted) for o in outcomes] == [(False, False)]


def test_a_request_id_that_was_never_shown_falls_back_to_the_window():
    outcomes = attribute([shown("r1", 0)], [(MIN, "complete", "lost-request")], window_ms=30 * MIN)
    assert [(o.clicked, o.converted) for o in outcomes] == [(True, True)]


def test_a_pairs_facts_of_every_day_are_joined_and_a_day_past_its_retention_is_gone(stack):
    """An impression at 23:50 answered at 00:10 the next day is clicked; the facts of a day
    older than the retention are compacted once the log clock passes it."""
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    config = FeatureConfig(attribution_retention_ms=2 * DAY_MS)
    day = 20 * DAY_MS
    impressions = [Impression("r-old", "u1", day - 3 * DAY_MS, "exp/a", (("i1", 1, "two_tower"),), 0, 0),
                   Impression("r1", "u1", day - 10 * MIN, "exp/a", (("i1", 1, "two_tower"), ("i2", 2, "trending")), 0, 1)]
    click = interaction("i1", "click", day + 10 * MIN, partition=0, offset=0)
    merged = MergedMutations()
    add_responses(EventBatch(config, [click]), merged)
    for impression in impressions:
        for mutation in impression_mutations(config, impression):
            merged.add(mutation)
    high_water = Mutation(Op.MAX, Feature.HIGH_WATER, EVENTS, "0", day + 10 * MIN)
    store.commit(version, [*merged.mutations(), high_water], {(EVENTS, 0): None}, {(EVENTS, 0): 1})
    outcomes = sorted((o.shown.request_id, o.shown.item_id, o.clicked) for o in read_outcomes(stack.redis_url, version))
    assert outcomes == [("r1", "i1", True), ("r1", "i2", False)]  # r-old's day went past the retention


def test_wilson_interval_and_z_test_match_known_values():
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-4) and high == pytest.approx(0.1744, abs=1e-4)
    assert wilson(0, 50)[0] == 0.0
    assert two_proportion_p_value(60, 1000, 40, 1000) == pytest.approx(0.0396, abs=1e-3)
    assert two_proportion_p_value(40, 1000, 60, 1000) == two_proportion_p_value(60, 1000, 40, 1000)


def outcomes(bucket: str, impressions: int, clicks: int, day_ms: int = 0) -> list[Outcome]:
    return [Outcome(Shown(f"u{n % 50}", f"i{n}", day_ms, f"{bucket}-{n}", bucket, 1 + n % 3, "popular"), n < clicks, False)
            for n in range(impressions)]


def test_the_report_names_a_winner_only_with_enough_data_and_significance():
    report = build_report(outcomes("ab/control", 1000, 40) + outcomes("ab/funnel", 1000, 80) + outcomes("ab/tiny", 50, 20))
    variants = report["experiments"]["ab"]["variants"]
    assert report["experiments"]["ab"]["control"] == "control"
    assert variants["control"]["verdict"] == "control" and variants["control"]["users"] == 50
    assert variants["funnel"]["verdict"] == "better than control" and variants["funnel"]["p_value"] < 0.001
    assert variants["funnel"]["lift_vs_control"] == pytest.approx(1.0)
    assert variants["tiny"]["verdict"] == NOT_ENOUGH_DATA and variants["tiny"]["p_value"] is None
    assert report["by_position"]["1"]["impressions"] == 334 + 334 + 17  # positions 1..3 cycle in each bucket


def test_the_control_comes_from_the_experiments_file_when_it_names_one():
    report = build_report(outcomes("ab/x", 400, 10) + outcomes("ab/y", 400, 30), controls={"ab": "y"})
    assert report["experiments"]["ab"]["control"] == "y"
    assert report["experiments"]["ab"]["variants"]["x"]["verdict"] == "worse than control"


@given(time=st.one_of(st.integers(min_value=0, max_value=2**63), st.just(10**30)), text=st.text(max_size=20),
       position=st.integers(min_value=1, max_value=2**64))
def test_members_are_the_compact_json_the_readers_parse(time, text, position):
    def compact(values):
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    assert responded_member(time, "play", text) == compact([time, "play", text])
    assert shown_member(time, text, "e/a", position, text) == compact([time, text, "e/a", position, text])
