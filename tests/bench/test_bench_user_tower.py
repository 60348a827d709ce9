"""The user tower's CPU per call, each history encoder beside the mean-pool tower and the SavedModel
measured in the same run (marker ``bench``)."""

from __future__ import annotations

import json

import pytest

from modelfiles.query import ENCODERS
from training.two_tower.space import DEFAULT_SPACE, SPACES
from training.two_tower.tower_bench import tower_benchmark

pytestmark = pytest.mark.bench


def test_user_tower_cpu_per_call_beside_mean_pool_and_the_saved_model():
    result = tower_benchmark()
    print("\nuser tower:", json.dumps(result, sort_keys=True))
    assert set(result["cpu_ms_per_call"]) == set(ENCODERS)
    assert all(ms > 0 for ms in result["cpu_ms_per_call"].values())
    space = SPACES[DEFAULT_SPACE]
    assert result["most_members"] == {encoder: max(space.members_for(encoder)) for encoder in space.encoder}
    assert set(result["cpu_ms_per_call_most_members"]) == set(space.encoder)
    # The numpy tower exists because the SavedModel costs more than a request's budget.
    assert result["cpu_ms_per_call"]["mean"] < result["saved_model_cpu_ms_per_call"]
