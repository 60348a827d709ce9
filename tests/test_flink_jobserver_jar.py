"""The job-server jar carries the backport of apache/beam PR #39191 (beam#27648): an SDF's self-checkpoint
residuals share one keyed state, and both of Flink's read paths take each residual out of it.

No cluster: the jar's own handler runs in a plain JVM (Java's single-file source mode), and the read paths are
read from the jar's bytecode. Against Beam 2.62.0's unpatched jar both tests fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from infra import jobserver

CHECK = Path(__file__).with_name("flink_residual_state_check.java")
SELF_CHECKPOINTS = 1000
# Flink's two read paths of a residual: the class, and its method that reads a residual back when its timer fires.
READ_PATHS = {
    "streaming": ("org/apache/beam/runners/flink/translation/wrappers/streaming/"
                  "ExecutableStageDoFnOperator$SdkHarnessDoFnRunner", "onTimer"),
    "batch": ("org/apache/beam/runners/flink/translation/functions/FlinkExecutableStageFunction", "mapPartition"),
}


@pytest.fixture(scope="module")
def jar() -> Path:
    return jobserver.ensure_jar()


def java_tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make install` (Java 17 from Debian's packages)"
    return found


def disassembled_method(jar: Path, class_name: str, method: str, tmp_path: Path) -> str:
    """``javap -c`` of one method of one class as the jar holds it."""
    with zipfile.ZipFile(jar) as archive:
        archive.extract(f"{class_name}.class", tmp_path)
    listing = subprocess.run([java_tool("javap"), "-c", "-p", str(tmp_path / f"{class_name}.class")],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    start = listing.index(f" {method}(")
    end = listing.find("\n\n", start)
    return listing[start:end]


def test_residuals_of_many_self_checkpoints_share_one_state_and_leave_none_behind(jar):
    ran = subprocess.run([java_tool("java"), "-cp", str(jar), str(CHECK), str(SELF_CHECKPOINTS)],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["state_ids"] == ["sdf_checkpoint_residuals"]
    assert report["state_ids_after_checkpoints"] == 1
    assert report["fired"] == SELF_CHECKPOINTS
    assert report["stored_equals_fired"] is True
    assert report["empty_after_firing"] is True


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_each_read_path_takes_the_residual_out_of_the_one_state(jar, read_path, tmp_path):
    method = disassembled_method(jar, *READ_PATHS[read_path], tmp_path)
    assert "StateAndTimerBundleCheckpointHandler.takeResidual" in method
    assert "StateTags.value" not in method


def test_the_cached_jar_is_named_after_its_sources(tmp_path, monkeypatch):
    """A machine with a jar built from other sources (the unpatched one) builds again instead of using it."""
    project = tmp_path / "flink-job-server"
    shutil.copytree(jobserver.PROJECT, project)
    monkeypatch.setattr(jobserver, "PROJECT", project)
    monkeypatch.setattr(jobserver, "POM", project / "pom.xml")
    before = jobserver.built_jar()

    handler = next(project.rglob("BundleCheckpointHandlers.java"))
    handler.write_text(handler.read_text() + "\n")

    assert jobserver.built_jar() != before
    assert jobserver.built_jar().parent == before.parent
