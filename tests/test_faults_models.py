"""Faults of the model registry's disk: damaged model files and a full disk (``make faults``)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kapparec.errors import KapparecError
from modelfiles.registry import ModelRegistry, verify
from tests.test_serving import copy_artifacts, recommend, served, wait_for_log_line  # noqa: F401 - served: a fixture

pytestmark = pytest.mark.faults

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))


def _largest_file(directory: Path) -> Path:
    return max((path for path in directory.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _overwrite_the_middle(path: Path) -> None:
    with path.open("r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(b"\x00" * 64)


@pytest.mark.parametrize("damage", [_truncate, _overwrite_the_middle])
def test_a_damaged_model_is_refused_the_old_one_keeps_serving_and_models_list_marks_it_broken(served, damage):
    production = served.registry.production()
    damaged = served.registry.register(lambda directory: copy_artifacts(production, directory),
                                       metadata={"model": "two_tower"})
    damage(_largest_file(damaged.path))
    served.registry.promote(damaged.id)
    try:
        wait_for_log_line(served.server, f"event=model_refused version={damaged.id}")
        assert recommend(served, served.users[0], k=3).model_version == production.id
        listing = subprocess.run([KAPPAREC, "models", "list", "--models-dir", str(served.registry.root)],
                                 capture_output=True, text=True, timeout=120)
        row = next(line for line in listing.stdout.splitlines() if damaged.id in line)
        assert listing.returncode == 0 and "broken" in row, listing.stdout + listing.stderr
    finally:
        served.registry.rollback()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the registry, or None where mounting one is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        yield None
        return
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def _write_bytes(size: int):
    def write(staging: Path) -> dict:
        (staging / "weights.bin").write_bytes(os.urandom(size))
        return {}
    return write


def _no_space(staging: Path) -> dict:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the write a full disk refuses


def test_a_full_registry_disk_is_one_clear_error_leaving_no_version_and_production_untouched(small_disk, tmp_path):
    registry = ModelRegistry((small_disk or tmp_path) / "models")
    production = registry.promote(registry.register(_write_bytes(100_000), {"model": "two_tower"}).id)
    too_large = _write_bytes(2_000_000) if small_disk else _no_space
    with pytest.raises(KapparecError, match="ran out of disk space") as refused:
        registry.register(too_large, {"model": "two_tower"})
    assert "\n" not in str(refused.value) and "production is unchanged" in str(refused.value)
    assert registry.version_ids() == [production.id] and not list(registry.staging_dir.iterdir())
    assert registry.production().id == production.id
    verify(registry.production())  # its files whole
    assert registry.register(_write_bytes(100_000), {"model": "two_tower"})  # the space came back
