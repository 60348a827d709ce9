"""Feature-job benchmarks (run with `make bench` or `pytest -m bench -s`): figures, not gates."""

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
        assert figures["events_per_s"] > 0 and figures["ceiling_events_per_s"] > 0 and figures["peak_rss_mb"] > 0


def test_freshness_of_the_continuous_job():
    result = freshness_benchmark(n=250)
    print("\nfreshness:", json.dumps(result, sort_keys=True))
    # Every event became readable, idle and under load, and the bare consumer received every one.
    assert result["n"] == result["load"]["n"] == result["ceiling"]["n"] == 250


def test_feature_reads_do_not_grow_with_the_log():
    sizes = tuple(int(s) for s in os.environ.get("KAPPAREC_BENCH_READ_SIZES", "1000000,5000000").split(","))
    result = reads_benchmark(sizes=sizes)
    print("\nreads:", json.dumps(result, sort_keys=True))
    assert all(figures["trending_global"]["p50_ms"] > 0 for figures in result["sizes"].values())
