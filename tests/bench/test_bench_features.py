"""Feature-job benchmarks (run with `make bench` or `pytest -m bench -s`): figures, not time gates; each test
asserts what makes its figure mean something (the same records read, no read faster than its floor)."""

from __future__ import annotations

import json
import os

import pytest

from featurestore.bench import reads_benchmark
from transforms.bench import backfill_benchmark, freshness_benchmark

pytestmark = pytest.mark.bench


def test_backfill_throughput_beside_raw_consume_ceiling():
    events = int(os.environ.get("KAPPAREC_BENCH_EVENTS", 1_000_000))
    result = backfill_benchmark(events=events)
    print("\nbackfill:", json.dumps(result, sort_keys=True))
    for figures in (result, result["dense"]):
        assert figures["records_read"] == figures["events"]  # the ceiling read the same topic the backfill did
        # The backfill reads the same records with the same client and then does the features' work too:
        # it can be no faster, and no cheaper per event, than the raw read.
        assert 0 < figures["events_per_s"] <= figures["ceiling_events_per_s"]
        cpu = figures["cpu_us_per_event"]
        assert cpu["backfill_process"] >= figures["ceiling_cpu_us_per_event"] > 0
        assert cpu["redis"] > 0 and cpu["broker"] > 0 and figures["peak_rss_mb"] > 0  # every commit went through Redis


def test_freshness_of_the_continuous_job():
    result = freshness_benchmark(n=250)
    print("\nfreshness:", json.dumps(result, sort_keys=True))
    # Every event became readable, idle and under load, and the bare consumer received every one.
    assert result["n"] == result["load"]["n"] == result["ceiling"]["n"] == 250
    # An event is readable only after a consumer like the bare one has received it: no faster than the ceiling.
    assert min(result["latencies_ms"]) >= min(result["ceiling"]["latencies_ms"]) > 0
    assert result["load"]["events_per_s"] > 0 and result["load"]["max_lag_records"] >= result["load"]["lag_second_half_max"]


def test_feature_reads_do_not_grow_with_the_log():
    sizes = tuple(int(s) for s in os.environ.get("KAPPAREC_BENCH_READ_SIZES", "1000000,5000000").split(","))
    result = reads_benchmark(sizes=sizes)
    print("\nreads:", json.dumps(result, sort_keys=True))
    for figures in result["sizes"].values():
        # Each read is at least one round trip: no read beats the same-run PING.
        for read in ("trending_global", "trending_region", "similar", "category_affinity"):
            assert figures[read]["p50_ms"] >= figures["ceiling_ping"]["p50_ms"] > 0, read
        # The per-feature sizes are parts of what Redis holds in all.
        assert 0 < sum(entry["mb"] for entry in figures["features"].values()) <= figures["redis_used_memory_mb"]
