"""ScaNN against the exact-search ceiling measured in the same run (marker ``bench``; prints, never time-gates).

Set KAPPAREC_BENCH_INDEX_SIZES (comma-separated item counts) to run other sizes than 100k and 1M.
"""

from __future__ import annotations

import json
import os

import pytest

from training.bench import index_benchmark

pytestmark = pytest.mark.bench


def sizes() -> tuple[int, ...]:
    raw = os.environ.get("KAPPAREC_BENCH_INDEX_SIZES", "100000,1000000")
    return tuple(int(size) for size in raw.split(","))


def test_scann_against_brute_force_ceiling():
    result = index_benchmark(sizes=sizes(), dim=64, queries=1_000, seed=0)
    print()
    print(f"{'items':>10} {'build s':>8} {'scann q/s':>10} {'batched q/s':>12} {'exact q/s (ceiling)':>20} {'speedup':>8} {'recall@10':>10}")
    for items, row in result["sizes"].items():
        print(
            f"{int(items):>10,} {row['build_s']:>8.1f} {row['scann_qps']:>10.0f} {row['scann_batched_qps']:>12.0f}"
            f" {row['brute_qps']:>20.1f} {row['speedup']:>7.1f}x {row['recall@10']:>10.3f}"
        )
    print(json.dumps(result, indent=2))
    assert set(result["sizes"]) == {str(size) for size in sizes()}
    for row in result["sizes"].values():
        assert 0.0 <= row["recall@10"] <= 1.0 and row["scann_qps"] > 0 and row["brute_qps"] > 0
        curve = row["recall_vs_qps"]
        # The sweep's point at serving's setting is the same search as the main figure: the same recall.
        assert [point["recall@10"] for point in curve if point["serving"]] == [row["recall@10"]]
        # Searching more leaves finds at least as many true neighbours.
        assert curve[-1]["recall@10"] >= curve[0]["recall@10"]
