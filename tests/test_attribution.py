"""The attribution join and the A/B statistics, as pure functions (the loop test runs them live)."""

from __future__ import annotations

import pytest

from featurestore.attribution import Outcome, Shown, attribute
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
