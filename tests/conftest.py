"""Test session stack: a real Apache Kafka broker and a real Redis on free ports, never mocks.

``stack`` gives each test an empty log and an empty Redis. Kafka keeps its log across a
restart, and a restart costs seconds, so the log is emptied by deleting every topic
(KRaft deletes a topic at once, and a topic made again under the same name starts at
offset 0, as each test expects).
"""

from __future__ import annotations

import os

# TFRS needs the legacy Keras, and TF must see that before it is first imported anywhere.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from infra.kafka_broker import broker_spec
from infra.services import ManagedService, free_port, redis_spec
from tests.logs import empty_log


@dataclass
class Stack:
    bootstrap: str
    redis_url: str
    broker: ManagedService
    redis_service: ManagedService

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory) -> Stack:
    run_dir: Path = tmp_path_factory.mktemp("stack")
    broker = ManagedService(broker_spec(free_port(), run_dir), run_dir)
    redis_service = ManagedService(redis_spec(free_port(), run_dir), run_dir)
    broker.start()
    redis_service.start()
    stack = Stack(
        bootstrap=f"127.0.0.1:{broker.spec.port}",
        redis_url=f"redis://127.0.0.1:{redis_service.spec.port}/0",
        broker=broker,
        redis_service=redis_service,
    )
    saved = {k: os.environ.get(k) for k in ("KAPPAREC_BOOTSTRAP", "KAPPAREC_REDIS_URL")}
    os.environ["KAPPAREC_BOOTSTRAP"] = stack.bootstrap
    os.environ["KAPPAREC_REDIS_URL"] = stack.redis_url
    yield stack
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    broker.stop()
    redis_service.stop()


@pytest.fixture
def stack(session_stack: Stack) -> Stack:
    """An empty log and an empty Redis for this test (either restarted if an earlier test stopped it)."""
    session_stack.broker.start()
    session_stack.redis_service.start()
    empty_log(session_stack.bootstrap)
    session_stack.redis().flushall()
    return session_stack
