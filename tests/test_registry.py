"""The model registry on a real temp directory: atomic register, promote/rollback, gate, gc, corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kapparec.errors import KapparecError
from modelfiles.registry import ModelRegistry
from training.gate import passes_gate


def writer(payload: str = "weights", extra: dict | None = None):
    def write(staging: Path) -> dict:
        (staging / "model").mkdir()
        (staging / "model" / "weights.bin").write_text(payload)
        return extra or {}

    return write


def register(registry: ModelRegistry, recall: float = 0.2):
    return registry.register(writer(), {"metrics": {"recall@10": recall}, "params": {"dim": 64}, "data": {"cutoff_ms": 1}})


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_register_writes_a_complete_version_with_sortable_ids(registry):
    first = registry.register(writer(), {"metrics": {"recall@10": 0.3}, "data": {"offsets": {"0": 10}}})
    second = register(registry)
    assert first.id.startswith("v0001-") and second.id.startswith("v0002-")
    assert [v.id for v in registry.versions()] == [first.id, second.id]
    metadata = json.loads((first.path / "metadata.json").read_text())
    assert metadata["id"] == first.id
    assert metadata["artifacts"] == ["model/weights.bin"]
    assert metadata["metrics"] == {"recall@10": 0.3} and metadata["data"] == {"offsets": {"0": 10}}
    assert metadata["status"] == "candidate" and metadata["created_at"] and metadata["code_version"]
    assert (first.path / "model" / "weights.bin").read_text() == "weights"


def test_write_returns_extra_metadata(registry):
    version = registry.register(writer(extra={"metrics": {"recall@10": 0.5}}), {"params": {"epochs": 3}})
    assert version.metrics == {"recall@10": 0.5} and version.metadata["params"] == {"epochs": 3}


def test_crash_during_write_leaves_no_visible_version(registry):
    def crashing(staging: Path) -> dict:
        (staging / "half.bin").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        registry.register(crashing, {})
    assert registry.versions() == []
    assert list(registry.staging_dir.iterdir()) == []
    assert register(registry).id.startswith("v0001-")


def test_metadata_may_not_override_registry_fields(registry):
    with pytest.raises(KapparecError, match="id"):
        registry.register(writer(), {"id": "v9999-20000101T0000Z"})
    assert registry.versions() == []


def test_promote_and_rollback_move_the_pointer(registry):
    v1, v2, v3 = register(registry), register(registry), register(registry)
    assert registry.production() is None
    registry.promote(v1.id)
    registry.promote(v2.id)
    registry.promote(v3.id)
    assert registry.production().id == v3.id
    assert os.readlink(registry.pointer) == f"versions/{v3.id}"
    assert registry.rollback().id == v2.id
    assert registry.production().id == v2.id
    assert registry.rollback().id == v1.id
    with pytest.raises(KapparecError, match="nothing to roll back"):
        registry.rollback()
    assert registry.production().id == v1.id
    assert [e["action"] for e in registry.history()] == ["promote"] * 3 + ["rollback"] * 2
    assert registry.statuses() == {v1.id: "production", v2.id: "retired", v3.id: "retired"}


def test_promote_leaves_no_temp_pointer_behind(registry):
    version = register(registry)
    registry.promote(version.id)
    registry.promote(version.id)
    assert sorted(p.name for p in registry.root.iterdir()) == ["production", "promotions.jsonl", "staging", "versions"]


def test_pointer_moved_without_history_still_rolls_back(registry):
    v1, v2 = register(registry), register(registry)
    registry.promote(v1.id)
    # A process that swapped the pointer and died before recording it: the pointer wins.
    os.symlink(f"versions/{v2.id}", registry.root / "tmp-link")
    os.replace(registry.root / "tmp-link", registry.pointer)
    assert registry.production().id == v2.id
    assert registry.rollback().id == v1.id


def test_promote_unknown_version_is_a_clear_error(registry):
    with pytest.raises(KapparecError, match="unknown model version 'v0042-20260101T0000Z'"):
        registry.promote("v0042-20260101T0000Z")
    assert registry.production() is None


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: (path / "metadata.json").unlink(), "metadata.json is missing"),
        (lambda path: (path / "metadata.json").write_text("{not json"), "not valid JSON"),
        (lambda path: (path / "model" / "weights.bin").unlink(), "artifact model/weights.bin is missing"),
    ],
)
def test_corrupt_version_is_a_clear_error(registry, damage, message):
    version = register(registry)
    damage(version.path)
    with pytest.raises(KapparecError, match=message) as raised:
        registry.get(version.id)
    assert version.id in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(KapparecError, match=message):
        registry.versions()
    with pytest.raises(KapparecError, match=message):
        registry.promote(version.id)


def test_gate_is_relative_to_production():
    production = {"recall@10": 0.20}
    assert passes_gate({"recall@10": 0.199}, production, margin=0.01)[0]
    assert passes_gate({"recall@10": 0.25}, production, margin=0.0)[0]
    passed, reason = passes_gate({"recall@10": 0.19}, production, margin=0.01)
    assert not passed and "fails" in reason and "0.1980" in reason


def test_gate_without_production_or_metric():
    assert passes_gate({"recall@10": 0.01}, None, margin=0.0)[0]
    assert not passes_gate({"ndcg@10": 0.3}, {"recall@10": 0.2}, margin=0.0)[0]
    assert passes_gate({"metrics": {"ndcg@10": 0.31}}, {"metrics": {"ndcg@10": 0.3}}, margin=0.0, metric="ndcg@10")[0]
    with pytest.raises(KapparecError, match="margin"):
        passes_gate({"recall@10": 0.2}, None, margin=1.5)


def test_worse_model_is_not_promoted_through_the_gate(registry):
    good = register(registry, recall=0.30)
    registry.promote(good.id)
    worse = register(registry, recall=0.25)
    passed, _ = passes_gate(worse.metadata, registry.production().metadata, margin=0.05)
    if passed:
        registry.promote(worse.id)
    assert registry.production().id == good.id


def test_gc_keeps_production_rollback_target_and_newest(registry):
    versions = [register(registry) for _ in range(6)]
    registry.promote(versions[0].id)
    registry.promote(versions[1].id)
    removed = registry.gc(keep=2)
    assert removed == [v.id for v in versions[2:4]]
    assert registry.version_ids() == [versions[i].id for i in (0, 1, 4, 5)]
    assert registry.rollback().id == versions[0].id
    assert [p for p in registry.staging_dir.iterdir()] == []
