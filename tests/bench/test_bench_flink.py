"""The feature jobs on a local Flink cluster beside the DirectRunner (`pytest -m bench -s`): figures, not gates."""

from __future__ import annotations

import json
import os

import pytest

from transforms.flink_bench import flink_benchmark

pytestmark = [pytest.mark.bench, pytest.mark.flink]


def test_flink_backfill_at_parallelism_1_and_2_and_freshness_beside_the_direct_runner():
    events = int(os.environ.get("KAPPAREC_BENCH_EVENTS", 1_000_000))
    result = flink_benchmark(events=events)
    print("\nflink:", json.dumps(result, sort_keys=True))
    for name in ("flink_p1", "flink_p2"):
        assert result["backfill"][name]["job_state"] == "FINISHED"
        assert result["backfill"][name]["cpu_cores"]["sdk_workers"] > 0  # the Python work ran in the pool's workers
    # Every timed event became readable on both runners, idle and under load.
    for figures in result["freshness"].values():
        assert figures["n"] == figures["load"]["n"] == 250
