"""The feature jobs on a local Flink cluster beside the DirectRunner (`pytest -m bench -s`): figures, not time
gates; each checked against what must hold of it."""

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
        # The Flink job ran inside the command that submitted it.
        assert result["backfill"][name]["job_seconds"] <= result["backfill"][name]["seconds"]
    for figures in result["backfill"].values():
        # Our processes are a part of the machine's (0.1 core of slack for the sampler's interval).
        assert figures["cpu_cores_total"] <= figures["machine_cores_busy"] + 0.1
        committing = figures["committing"]
        assert sum(committing["cpu_cores"].values()) <= committing["machine_cores_busy"] + 0.1
        assert 0 < committing["seconds"] <= figures["seconds"]
        # Redis runs one script at a time: its merges fill at most its one thread.
        assert 0 < committing["merge_script_cores"] <= 1.0
    # Stream == backfill: what the jobs built over the whole run is what one replay of the log builds.
    assert result["continuous"]["direct_backfill"]["equal"], result["continuous"]["direct_backfill"]
    # Every timed event became readable on both runners, idle and under load.
    for figures in result["freshness"].values():
        assert figures["n"] == figures["load"]["n"] == 250
