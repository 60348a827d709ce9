"""The system panel: the stream job's lag and freshness, the writer lease, builds in progress,
the feature version and its stats, the production model and its evaluation, serving latency
and rate from the server's own metrics, and the dead-letter topic.

Each section is read on its own: a service that does not answer leaves its section with the
reason, and the rest of the panel still shows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from console.clients import Clients
from featurestore import layout
from serving.scrape import RpcCounts, rpc_counts, scrape
from streams import offsets
from streams.dlq import latest_dead_letters
from training.two_tower.report import METRICS, REPORT_JSON, table_rows
from transforms.jobs import READ_TOPICS

DEAD_LETTERS_SHOWN = 5


@dataclass
class Section:
    value: object = None
    error: str = ""


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass
class ServingWindow:
    """The previous scrape of the server's metrics, so that each figure covers the time between two looks."""

    last: RpcCounts | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def figures(self, metrics_url: str) -> dict:
        now = rpc_counts(scrape(metrics_url), "Recommend")
        with self.lock:
            window, self.last = now.since(self.last), now
        return {"requests": int(window.count), "seconds": window.seconds, "qps": window.per_second,
                "p50_ms": _ms(window.quantile(0.5)), "p99_ms": _ms(window.quantile(0.99))}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def attempt(read: Callable[[], object]) -> Section:
    try:
        return Section(read())
    except Exception as exc:  # noqa: BLE001 - one unreachable service must not take the panel down
        return Section(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unavailable'}")


def system_panel(clients: Clients, serving: ServingWindow) -> dict[str, Section]:
    config = clients.config
    return {
        "stream": attempt(lambda: _stream(clients)),
        "lease": attempt(lambda: _lease(clients)),
        "builds": attempt(lambda: [(v, meta) for v, meta in clients.store.versions().items() if meta.get("state") == "building"]),
        "features": attempt(lambda: _features(clients)),
        "model": attempt(lambda: _model(clients)),
        "serving": attempt(lambda: serving.figures(config.metrics_url)) if config.metrics_url
        else Section(error="no --metrics-url given"),
        "dead_letters": attempt(lambda: latest_dead_letters(config.bootstrap, DEAD_LETTERS_SHOWN)),
    }


def _stream(clients: Clients) -> dict:
    """Per partition the committed offset against the log's end, through the jobs' own planner
    (a partition never committed counts from its log beginning), and how old the newest
    committed event is."""
    reader = clients.reader()
    plan = offsets.plan_from(offsets.log_snapshot(clients.config.bootstrap, READ_TOPICS), clients.store.offsets(reader.version))
    lags = [PartitionLag(topic, p, start, end) for topic, ranges in plan.items() for p, (start, end) in sorted(ranges.items())]
    clock_ms = reader.log_clock_ms()
    return {"partitions": lags, "log_clock_ms": clock_ms,
            "newest_event_age_s": (time.time() * 1000 - clock_ms) / 1000 if clock_ms else None}


def _lease(clients: Clients) -> dict | None:
    client = clients.store.client
    value = client.get(layout.STREAM_LOCK)
    if not value:
        return None
    token, _, holder = value.partition("@")
    return {"holder": holder, "token": token, "expires_in_s": max(0, client.pttl(layout.STREAM_LOCK)) / 1000}


def _features(clients: Clients) -> dict:
    version = clients.store.require_current_version()
    return {"version": version, "stats": clients.store.stats(version)}


def _model(clients: Clients) -> dict | None:
    production = clients.registry.production()
    if production is None:
        return None
    report_path = production.path / REPORT_JSON
    rows = table_rows(json.loads(report_path.read_text())) if report_path.is_file() else []
    return {"version": production.id, "created_at": production.metadata.get("created_at", ""),
            "metrics": METRICS, "rows": rows}
