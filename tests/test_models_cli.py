"""``kapparec models ...`` as a user runs it: the real console script on a temp registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfiles.registry import ModelRegistry

KAPPAREC = Path(sys.executable).with_name("kapparec")


def kapparec(models_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAPPAREC_MODELS_DIR": str(models_dir)}
    return subprocess.run([str(KAPPAREC), "models", *args], capture_output=True, text=True, env=env, timeout=60)


def write_weights(staging: Path) -> dict:
    (staging / "weights.bin").write_text("w")
    return {}


@pytest.fixture
def models_dir(tmp_path) -> Path:
    registry = ModelRegistry(tmp_path / "models")
    for recall in (0.21, 0.24):
        registry.register(write_weights, {"metrics": {"recall@10": recall, "ndcg@10": recall / 2}})
    return registry.root


def version_ids(models_dir: Path) -> list[str]:
    return ModelRegistry(models_dir).version_ids()


def test_list_shows_versions_metrics_and_production(models_dir):
    first, second = version_ids(models_dir)
    assert kapparec(models_dir, "promote", second).returncode == 0
    listing = kapparec(models_dir, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert "recall@10" in lines[0] and "ndcg@10" in lines[0]
    assert lines[1].startswith(f"  {first}") and "candidate" in lines[1] and "0.2100" in lines[1]
    assert lines[2].startswith(f"* {second}") and "production" in lines[2] and "0.2400" in lines[2]


def test_list_json(models_dir):
    first, second = version_ids(models_dir)
    kapparec(models_dir, "promote", first)
    rows = json.loads(kapparec(models_dir, "list", "--json").stdout)
    assert [(r["id"], r["production"]) for r in rows] == [(first, True), (second, False)]
    assert rows[1]["metadata"]["metrics"]["recall@10"] == 0.24


def test_promote_then_rollback(models_dir):
    first, second = version_ids(models_dir)
    kapparec(models_dir, "promote", first)
    promoted = kapparec(models_dir, "promote", second)
    assert promoted.stdout.strip() == f"production: {second} (was {first})"
    rolled = kapparec(models_dir, "rollback")
    assert rolled.returncode == 0 and rolled.stdout.strip() == f"production: {first} (rolled back from {second})"
    assert ModelRegistry(models_dir).production().id == first


def test_unknown_version_is_one_line_and_nonzero(models_dir):
    result = kapparec(models_dir, "promote", "v0099-20260101T0000Z")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["kapparec: error: unknown model version 'v0099-20260101T0000Z' (see `kapparec models list`)"]
    assert ModelRegistry(models_dir).production() is None


def test_rollback_without_history_is_one_line_and_nonzero(models_dir):
    result = kapparec(models_dir, "rollback")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "nothing to roll back" in result.stderr


def test_a_corrupt_version_is_listed_broken_beside_the_others(models_dir):
    first, second = version_ids(models_dir)
    (models_dir / "versions" / first / "metadata.json").write_text("{")
    result = kapparec(models_dir, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "broken" in lines[1] and f"model version {first} is corrupt: metadata.json is not valid JSON" in lines[1]
    assert lines[2].startswith(f"  {second}") and "candidate" in lines[2]


@pytest.mark.parametrize("damage", [lambda path: path.write_text(""), lambda path: path.write_text("W")])
def test_a_truncated_or_overwritten_artifact_is_listed_broken(models_dir, damage):
    first, _ = version_ids(models_dir)
    damage(models_dir / "versions" / first / "weights.bin")
    rows = json.loads(kapparec(models_dir, "list", "--json").stdout)
    assert rows[0]["status"] == "broken" and "weights.bin" in rows[0]["problem"] and rows[1]["status"] == "candidate"


def test_empty_registry_and_bad_usage(tmp_path):
    empty = kapparec(tmp_path / "none", "list")
    assert empty.returncode == 0 and "no model versions" in empty.stdout
    missing_arg = kapparec(tmp_path, "promote")
    assert missing_arg.returncode == 2 and len(missing_arg.stderr.strip().splitlines()) == 1


def test_gc_keeps_production(models_dir):
    first, second = version_ids(models_dir)
    kapparec(models_dir, "promote", first)
    result = kapparec(models_dir, "gc", "--keep", "0")
    assert result.returncode == 0 and second in result.stdout
    assert version_ids(models_dir) == [first]
