"""The ranking stage's CPU: the learned ranker beside the documented blend, in the same run (marker ``bench``)."""

from __future__ import annotations

import json

import pytest

from serving.ranking_bench import ranking_benchmark

pytestmark = pytest.mark.bench


def test_learned_ranking_beside_the_blend():
    result = ranking_benchmark()
    print("\nranking:", json.dumps(result, sort_keys=True))
    assert result["distinct_items"] < result["candidates"]  # the sources overlap, as a request's do
    assert all(ms > 0 for ms in result["cpu_ms_per_ranking"].values())
