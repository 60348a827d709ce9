"""Readiness probes against real services, and against a foreign listener that only accepts TCP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from infra.health import broker_healthy, flink_healthy, flink_overview, redis_healthy, wait_until
from infra.services import free_port
from kapparec.errors import KapparecError


@pytest.fixture
def foreign_port() -> Iterator[int]:
    """A port that accepts connections but never answers: an open port is not a healthy service."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_broker_probe_answers_true_for_the_broker(stack):
    assert broker_healthy(stack.bootstrap)


def test_broker_probe_is_false_for_a_silent_listener_and_a_closed_port(foreign_port: int):
    assert not broker_healthy(f"127.0.0.1:{foreign_port}", timeout_s=0.5)
    assert not broker_healthy(f"127.0.0.1:{free_port()}", timeout_s=0.5)


def test_redis_probe_answers_true_for_redis(stack):
    assert redis_healthy(stack.redis_url)


def test_redis_probe_is_false_for_a_silent_listener(foreign_port: int):
    assert not redis_healthy(f"redis://127.0.0.1:{foreign_port}/0", timeout_s=0.3)


def test_flink_probe_is_false_without_a_jobmanager(foreign_port: int):
    assert flink_overview(foreign_port, timeout_s=0.3) is None
    assert not flink_healthy(free_port(), timeout_s=0.3)


def test_wait_until_returns_once_the_check_holds_and_raises_the_given_error_otherwise():
    answers = iter([False, False, True])
    wait_until(lambda: next(answers), timeout_s=5, failure="never", interval_s=0.01)

    with pytest.raises(KapparecError, match="^gave up$"):
        wait_until(lambda: False, timeout_s=0.05, failure="gave up", interval_s=0.01)
