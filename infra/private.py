"""A broker and Redis of a command's own, started and stopped around one job.

Benchmarks run on one so they never touch the user's log, and the offline funnel evaluation
replays a part of the log into one (``training.feature_replay``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.kafka_broker import broker_spec
from infra.services import ManagedService, free_port, redis_spec


@dataclass(frozen=True)
class PrivateStack:
    bootstrap: str
    redis_url: str


@contextlib.contextmanager
def private_stack() -> Iterator[PrivateStack]:
    """A broker and Redis of this job's own, stopped when the block ends: the user's log is never touched."""
    with tempfile.TemporaryDirectory(prefix="kapparec-private-") as run_dir:
        services = [
            ManagedService(broker_spec(free_port(), Path(run_dir)), Path(run_dir)),
            ManagedService(redis_spec(free_port(), Path(run_dir)), Path(run_dir)),
        ]
        try:
            for service in services:
                service.start()
            broker, redis_service = services
            yield PrivateStack(f"127.0.0.1:{broker.spec.port}", f"redis://127.0.0.1:{redis_service.spec.port}/0")
        finally:
            for service in services:
                service.stop()
