"""``kapparec bench all --quick --json`` as a user runs it (marker ``bench``): under 5 minutes, one report
whose goal marks agree with its figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kapparec.bench_all import STEPS
from kapparec.bench_plots import PLOTS

pytestmark = pytest.mark.bench

QUICK_LIMIT_S = 300


def test_bench_all_quick_writes_one_judged_report(tmp_path):
    out = tmp_path / "report"
    started = time.monotonic()
    run = subprocess.run([str(Path(sys.executable).with_name("kapparec")), "bench", "all", "--quick", "--json",
                          "--out", str(out)], capture_output=True, text=True, timeout=2 * QUICK_LIMIT_S)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-2000:]
    printed = json.loads(run.stdout)
    written = json.loads((out / "report.json").read_text())
    print(f"\nbench all --quick: {seconds:.0f} s, load average {printed['load_average']}")
    assert seconds < QUICK_LIMIT_S
    assert printed["figures"] == written["figures"] and printed["quick"] is True
    assert list(written["results"]) == [step.name for step in STEPS]  # every benchmark, in order
    assert {name for name in PLOTS} == set(written["plots"]) == {path.name for path in out.glob("*.png")}
    assert len(written["load_average"]["start"]) == len(written["load_average"]["end"]) == 3
    judged = [row for row in written["figures"] if row["met"] is not None]
    assert judged, "some goals hold at every size and must be judged on a quick run"
    for row in judged:  # a quick run judges only goals whose text states the whole threshold
        assert agrees_with_goal(row), row
    table = (out / "report.md").read_text()
    assert all(f"| {row['name']} |" in table for row in written["figures"])


# The goals whose text states the whole threshold.
GOAL_FORMS = (
    (re.compile(r"<= ([\d.]+) ms$"), lambda value, ceiling, x: value <= x),
    (re.compile(r">= (\d+)% of "), lambda value, ceiling, x: value >= x / 100 * ceiling),
    (re.compile(r">= ([\d.]+)x exact search$"), lambda value, ceiling, x: value >= x * ceiling),
    (re.compile(r">= ([\d.]+)$"), lambda value, ceiling, x: value >= x),
    (re.compile(r"^(0)$"), lambda value, ceiling, x: value == x),
)


def agrees_with_goal(row: dict) -> bool:
    """Whether ``met`` says what the goal's text says of the value."""
    for pattern, holds in GOAL_FORMS:
        found = pattern.search(row["goal"])
        if found:
            return row["met"] == holds(row["value"], row["ceiling"], float(found.group(1)))
    raise AssertionError(f"a quick run judged a goal whose text does not state its threshold: {row}")
