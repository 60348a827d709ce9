"""Recommend under concurrent clients beside the empty-RPC ceiling on the same server (marker ``bench``).

Also ``kapparec bench serving --json``. The defaults are the issue's setup: a 100,000-item catalog,
10,000 distinct users, 1, 8 and 32 clients for 30 s each. KAPPAREC_BENCH_SERVING_ITEMS and
KAPPAREC_BENCH_SERVING_SECONDS shrink it for a quick look.
"""

from __future__ import annotations

import json
import os

import pytest

from kapparec.serving_bench import serving_benchmark

pytestmark = pytest.mark.bench


def test_recommend_against_the_empty_rpc_ceiling():
    items = int(os.environ.get("KAPPAREC_BENCH_SERVING_ITEMS", "100000"))
    seconds = float(os.environ.get("KAPPAREC_BENCH_SERVING_SECONDS", "30"))
    result = serving_benchmark(items=items, seconds=seconds)
    print()
    print(f"{'clients':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'QPS':>8} {'errors':>7} {'ceiling QPS':>12} {'ratio':>6}")
    for clients, row in result["clients"].items():
        print(f"{clients:>8} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['qps']:>8.1f}"
              f" {row['errors']:>7} {result['ceiling_qps'][clients]:>12.1f} {row['ratio_to_ceiling']:>6.3f}")
    print("mean ms per funnel stage:", result["stage_mean_ms"])
    print(json.dumps(result, indent=2))
    assert result["items"] == items and set(result["clients"]) == {"1", "8", "32"}
    for clients, row in result["clients"].items():
        assert row["requests"] > 0 and result["ceiling_qps"][clients] > 0
        # The empty RPC is the same server doing none of the work: Recommend can be neither faster nor cheaper,
        # and the handler's thread is a part of the server's CPU.
        assert row["qps"] <= result["ceiling_qps"][clients]
        assert row["server_cpu_ms"] >= result["ceiling"][clients]["server_cpu_ms"]
        assert 0 < row["handler_cpu_ms"] <= row["server_cpu_ms"]
        assert row["redis_cpu_ms"] > 0  # every Recommend reads the user's features from Redis
        # Degraded pages come from the snapshot alone: a run that served them did not measure the funnel.
        assert set(row["served_from"]) <= {"full", "cached"}, row["served_from"]
    assert set(result["open_loop"]) == {"25", "50", "80"}
    for share, row in result["open_loop"].items():
        print(f"open loop at {share}%: {row}")
        assert row["rate_qps"] > 0 and row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"]
    print("under live ingest:", result["live_ingest"])
    assert result["live_ingest"]["events_per_s"] > 0 and result["live_ingest"]["qps"] > 0
    index = result["index"]
    print("the served index:", index)
    # Served as calibrated: one of the leaf counts the calibration measured (none for an exact index).
    assert not index["calibration"] or index["leaves_searched"] in {step["leaves"] for step in index["calibration"]}
    stages = result["stage_cpu_ms"]
    print("CPU ms per Recommend by stage at 8 clients:", stages)
    assert stages["sum"] > 0 and stages["server_cpu_ms"] > 0
    alone = result["in_process"]
    print("the handler alone, in process:", alone)
    # Every first page computed by the funnel and every repeat answered from the response cache, which is cheaper.
    assert set(alone["served_from"]["first"]) == {"full"} and set(alone["served_from"]["again"]) == {"cached"}
    assert 0 < alone["again_cpu_ms"] < alone["first_cpu_ms"]
