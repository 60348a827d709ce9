"""Where things are: endpoints, topics and directories, from flags first, then env vars, then defaults.

Every client path reads its endpoint through here, so pointing ``--bootstrap`` (or
``KAPPAREC_BOOTSTRAP``) at a real Kafka cluster changes nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_BROKER_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_FLINK_PORT = 8081


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        from kapparec.errors import UsageError

        raise UsageError(f"{name} must be an integer, got {raw!r}") from None


def broker_port() -> int:
    """The local broker's port (`kapparec infra up`)."""
    return env_int("KAPPAREC_BROKER_PORT", DEFAULT_BROKER_PORT)


def redis_port() -> int:
    """The local Redis's port (`kapparec infra up`)."""
    return env_int("KAPPAREC_REDIS_PORT", DEFAULT_REDIS_PORT)


def flink_port() -> int:
    """The local Flink cluster's REST port (`kapparec infra up --with-flink`)."""
    return env_int("KAPPAREC_FLINK_PORT", DEFAULT_FLINK_PORT)


def bootstrap(override: str | None = None) -> str:
    """Kafka bootstrap servers, ``host:port[,host:port...]``."""
    return override or os.environ.get("KAPPAREC_BOOTSTRAP") or f"127.0.0.1:{broker_port()}"


def redis_url(override: str | None = None) -> str:
    """The feature store, ``redis://host:port/db``."""
    return override or os.environ.get("KAPPAREC_REDIS_URL") or f"redis://127.0.0.1:{redis_port()}/0"


def run_dir() -> Path:
    """Pid files, logs and the Flink install of the local stack (git-ignored)."""
    return Path(os.environ.get("KAPPAREC_RUN_DIR") or PROJECT_ROOT / ".run")


def cache_dir() -> Path:
    """Downloads and builds that outlive a venv or a worktree: the Kafka broker's jars and Beam's
    Flink job-server jar, both resolved by Maven."""
    return Path(os.environ.get("KAPPAREC_CACHE_DIR") or Path.home() / ".cache" / "kapparec")


def models_dir() -> Path:
    """The on-disk model registry."""
    return Path(os.environ.get("KAPPAREC_MODELS_DIR") or PROJECT_ROOT / "models")


def experiments_file(override: Path | None = None) -> Path:
    """The A/B experiments file serving follows (missing: no experiments)."""
    return override or Path(os.environ.get("KAPPAREC_EXPERIMENTS") or PROJECT_ROOT / "experiments.toml")


def partitions() -> int:
    """Partitions for newly created topics."""
    return env_int("KAPPAREC_PARTITIONS", 4)
