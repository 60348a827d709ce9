"""The on-disk model registry: immutable versions, an atomic production pointer, promotion history.

Layout under the models dir (``kapparec.settings.models_dir()``)::

    versions/v0001-20261120T2300Z/   metadata.json + artifacts (immutable once visible)
    staging/                          versions being written (never read by anyone else)
    production -> versions/<id>       relative symlink, swapped with os.replace
    promotions.jsonl                  append-only: {"at", "action", "version", "previous"}

Every change a reader can observe is a single rename: a version appears whole (staging dir
renamed into ``versions/``) and production moves whole (temp symlink renamed over the old one),
so a reader never sees a half-written version or a missing pointer.

The pointer is the source of truth for "what serves"; ``metadata.json`` is never rewritten after
registration (its ``status`` records how the version entered the registry) and the live status
(``production`` / ``retired`` / ``candidate``) is derived from the pointer and the history.

``metadata.json`` also holds each artifact's size and SHA-256 as written (``artifact_files``):
a file truncated or overwritten since (a full disk, a bad copy) is found by ``verify`` before
the version serves, and ``kapparec models list`` shows it broken.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from kapparec import settings
from kapparec.errors import KapparecError

METADATA_FILE = "metadata.json"
VERSION_PATTERN = re.compile(r"^v(\d{4,})-\d{8}T\d{4}Z$")
RESERVED_KEYS = ("id", "created_at", "artifacts", "artifact_files", "code_version")
DEFAULT_KEEP = 5
# A staging dir older than this belongs to a writer that died; younger ones may be in use.
STALE_STAGING_S = 3600


@dataclass(frozen=True)
class ModelVersion:
    id: str
    path: Path
    metadata: dict

    @property
    def metrics(self) -> dict:
        return self.metadata.get("metrics") or {}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def code_version() -> str:
    """The git commit of the code that trained the model, or the package version outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(settings.PROJECT_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(settings.PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"kapparec {version('kapparec')}"
        except PackageNotFoundError:
            return "unknown"


def listed_files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def describe_files(directory: Path) -> dict[str, dict]:
    """Each file under ``directory``: its size and SHA-256, what ``verify`` checks it against."""
    return {name: {"bytes": (directory / name).stat().st_size, "sha256": _sha256(directory / name)}
            for name in listed_files(directory)}


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def verify(version: ModelVersion) -> None:
    """Raise ``KapparecError`` naming the first artifact whose size or content is not what was
    registered. A version registered before sizes and hashes were recorded has nothing to check."""
    for name, written in (version.metadata.get("artifact_files") or {}).items():
        path = version.path / name
        size = path.stat().st_size if path.is_file() else None
        if size != written["bytes"]:
            raise KapparecError(f"model version {version.id} is broken: artifact {name} holds {size} bytes, "
                                f"{written['bytes']} were registered (truncated?)")
        if _sha256(path) != written["sha256"]:
            raise KapparecError(f"model version {version.id} is broken: artifact {name} is not what was registered "
                                "(its SHA-256 differs)")


def write_json_atomic(path: Path, payload: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temp, path)


class ModelRegistry:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else settings.models_dir()
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.pointer = self.root / "production"
        self.history_file = self.root / "promotions.jsonl"

    # -- writing versions ---------------------------------------------------------------

    def register(self, write: Callable[[Path], dict], metadata: dict) -> ModelVersion:
        """Run ``write(staging_dir)`` (artifacts; returns extra metadata), then publish atomically.

        If ``write`` raises, the staging dir is removed and no version appears; a full disk is
        refused in one line that says so.
        """
        try:
            return self._register(write, metadata)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise KapparecError(f"the model registry at {self.root} ran out of disk space ({exc.strerror}): "
                                "nothing was registered, production is unchanged") from None

    def _register(self, write: Callable[[Path], dict], metadata: dict) -> ModelVersion:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="version-", dir=self.staging_dir))
        try:
            extra = write(staging) or {}
            created = utc_now()
            record = {**metadata, **extra}
            clashing = [key for key in RESERVED_KEYS if key in record]
            if clashing:
                raise KapparecError(f"metadata may not set {', '.join(clashing)}: the registry assigns them")
            record.setdefault("status", "candidate")
            record.update(created_at=created.isoformat(timespec="seconds"), code_version=code_version(),
                          artifacts=listed_files(staging), artifact_files=describe_files(staging))
            return self.publish(staging, record, created)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename

    def publish(self, staging: Path, record: dict, created: datetime) -> ModelVersion:
        """Claim the next id by renaming into versions/; a concurrent writer's claim makes us retry."""
        for _ in range(100):
            version_id = f"v{self.next_sequence():04d}-{created.strftime('%Y%m%dT%H%MZ')}"
            write_json_atomic(staging / METADATA_FILE, {**record, "id": version_id})
            try:
                os.rename(staging, self.versions_dir / version_id)
            except OSError:  # a non-empty target: someone else took this id
                if not (self.versions_dir / version_id).exists():
                    raise
                continue
            return self.get(version_id)
        raise KapparecError(f"could not allocate a version id under {self.versions_dir}")

    def next_sequence(self) -> int:
        numbers = [int(match.group(1)) for match in map(VERSION_PATTERN.match, self.version_ids()) if match]
        return max(numbers, default=0) + 1

    # -- reading versions ---------------------------------------------------------------

    def version_ids(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(entry.name for entry in self.versions_dir.iterdir() if entry.is_dir())

    def versions(self) -> list[ModelVersion]:
        """All versions, oldest first; a corrupt one raises ``KapparecError`` naming it."""
        return [self.get(version_id) for version_id in self.version_ids()]

    def get(self, version_id: str) -> ModelVersion:
        path = self.versions_dir / version_id
        if not VERSION_PATTERN.match(version_id) or not path.is_dir():
            raise KapparecError(f"unknown model version {version_id!r} (see `kapparec models list`)")
        try:
            metadata = json.loads((path / METADATA_FILE).read_text())
        except FileNotFoundError:
            raise KapparecError(f"model version {version_id} is corrupt: {METADATA_FILE} is missing") from None
        except (OSError, ValueError) as exc:
            raise KapparecError(f"model version {version_id} is corrupt: {METADATA_FILE} is not valid JSON ({exc})") from None
        if not isinstance(metadata, dict) or metadata.get("id") != version_id:
            raise KapparecError(f"model version {version_id} is corrupt: {METADATA_FILE} does not describe {version_id}")
        missing = [name for name in metadata.get("artifacts", []) if not (path / name).is_file()]
        if missing:
            raise KapparecError(f"model version {version_id} is corrupt: artifact {missing[0]} is missing ({len(missing)} missing)")
        return ModelVersion(version_id, path, metadata)

    def production(self) -> ModelVersion | None:
        try:
            target = os.readlink(self.pointer)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KapparecError(f"production pointer {self.pointer} is not a symlink: {exc}") from None
        version_id = Path(target).name
        if not (self.versions_dir / version_id).is_dir():
            raise KapparecError(f"production points to {version_id}, which does not exist under {self.versions_dir}")
        return self.get(version_id)

    # -- the production pointer ---------------------------------------------------------

    def promote(self, version_id: str) -> ModelVersion:
        """Make ``version_id`` production (atomic pointer swap) and record it."""
        return self.move_pointer(self.get(version_id), "promote")

    def rollback(self) -> ModelVersion:
        """Production goes back to the version that served before the current one."""
        target = self.rollback_target()
        if target is None:
            raise KapparecError("nothing to roll back to: no earlier production version in the promotion history")
        if not (self.versions_dir / target).is_dir():
            raise KapparecError(f"cannot roll back: previous production version {target} no longer exists")
        return self.move_pointer(self.get(target), "rollback")

    def move_pointer(self, version: ModelVersion, action: str) -> ModelVersion:
        current = self.production()
        temp = self.root / f".production-{uuid.uuid4().hex}"
        os.symlink(Path("versions") / version.id, temp)  # relative: the root may move
        os.replace(temp, self.pointer)
        self.append_history(action, version.id, current.id if current else None)
        return version

    def append_history(self, action: str, version_id: str, previous: str | None) -> None:
        entry = {"at": utc_now().isoformat(timespec="seconds"), "action": action, "version": version_id, "previous": previous}
        with self.history_file.open("a") as history:
            history.write(json.dumps(entry) + "\n")
            history.flush()
            os.fsync(history.fileno())

    def history(self) -> list[dict]:
        if not self.history_file.exists():
            return []
        entries = []
        for number, line in enumerate(self.history_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise KapparecError(f"{self.history_file} line {number} is not valid JSON") from None
        return entries

    def production_stack(self) -> list[str]:
        """Versions that served, oldest first: promote pushes, rollback pops.

        If the pointer moved but the process died before recording it, the pointer wins.
        """
        stack: list[str] = []
        for entry in self.history():
            if entry.get("action") == "rollback" and stack:
                stack.pop()
            elif entry.get("action") == "promote":
                stack.append(entry["version"])
        current = self.production()
        if current is not None and (not stack or stack[-1] != current.id):
            stack.append(current.id)
        return stack

    def rollback_target(self) -> str | None:
        stack = self.production_stack()
        return stack[-2] if len(stack) >= 2 else None

    def statuses(self) -> dict[str, str]:
        """Live status per version id: ``production``, ``retired`` (served before) or ``candidate``."""
        stack = self.production_stack()
        served = {entry.get("version") for entry in self.history()}
        current = stack[-1] if stack else None

        def status(version_id: str) -> str:
            if version_id == current:
                return "production"
            return "retired" if version_id in served else "candidate"

        return {version_id: status(version_id) for version_id in self.version_ids()}

    # -- garbage collection -------------------------------------------------------------

    def gc(self, keep: int = DEFAULT_KEEP) -> list[str]:
        """Delete all but the newest ``keep`` non-production versions; returns the deleted ids.

        Production and the rollback target are never deleted. A version is renamed out of
        ``versions/`` before it is removed, so nobody sees it half-deleted.
        """
        if keep < 0:
            raise KapparecError(f"keep must be >= 0, got {keep}")
        protected = set(self.production_stack()[-2:])
        removable = [version_id for version_id in self.version_ids() if version_id not in protected]
        doomed = removable[: max(0, len(removable) - keep)]
        for version_id in doomed:
            trash = self.staging_dir / f"deleted-{version_id}-{uuid.uuid4().hex}"
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            os.rename(self.versions_dir / version_id, trash)
            shutil.rmtree(trash)
        self.remove_stale_staging()
        return doomed

    def remove_stale_staging(self) -> None:
        if not self.staging_dir.is_dir():
            return
        cutoff = time.time() - STALE_STAGING_S
        for entry in self.staging_dir.iterdir():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)

