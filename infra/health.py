"""Readiness probes that speak each service's own protocol: an open TCP port proves nothing.

A foreign process can hold the port, and a broker can accept connections before it
answers requests, so each probe makes one real round trip and reports True or False.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Callable

from kapparec.errors import KapparecError


def broker_healthy(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """An ApiVersions handshake plus a Metadata request answered by the broker."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    # kafka-python logs every refused connection at ERROR; a failed probe is an answer, not an error.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="kapparec-health",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def redis_healthy(url: str, timeout_s: float = 1.0) -> bool:
    """PING answered with PONG."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def flink_overview(port: int, timeout_s: float = 2.0) -> dict | None:
    """The JobManager's REST ``/overview`` document, or None when it does not answer JSON."""
    return flink_rest(f"localhost:{port}", "/overview", timeout_s)


def flink_jobs(master: str, timeout_s: float = 2.0) -> list[dict] | None:
    """Every job of ``/jobs/overview`` (``jid``, ``name``, ``state``, ...), or None when Flink does not answer."""
    document = flink_rest(master, "/jobs/overview", timeout_s)
    return None if document is None else document.get("jobs", [])


def flink_rest(master: str, path: str, timeout_s: float = 2.0) -> dict | None:
    """A JSON document of Flink's REST API at ``master`` (host:port), or None when it does not answer JSON."""
    try:
        with urllib.request.urlopen(f"http://{master}{path}", timeout=timeout_s) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def flink_healthy(port: int, timeout_s: float = 2.0) -> bool:
    """The JobManager answers and at least one TaskManager has registered with it."""
    overview = flink_overview(port, timeout_s)
    return bool(overview) and overview.get("taskmanagers", 0) >= 1


def wait_until(check: Callable[[], bool], timeout_s: float, failure: str, interval_s: float = 0.2) -> None:
    """Poll ``check`` until it holds; raise ``KapparecError(failure)`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise KapparecError(failure)
        time.sleep(interval_s)
