"""Prometheus metrics of the serving process (``prometheus_client``), exported on ``--metrics-port``.

With several worker processes the metrics live in ``PROMETHEUS_MULTIPROC_DIR`` and the parent
serves their sum, the client library's multi-process mode.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 0.5, 1.0)

RPC_SECONDS = Histogram("kapparec_rpc_seconds", "RPC latency", ["rpc"], buckets=LATENCY_BUCKETS)
STAGE_SECONDS = Histogram("kapparec_funnel_stage_seconds", "Funnel stage latency", ["stage"], buckets=LATENCY_BUCKETS)
REQUESTS = Counter("kapparec_requests", "Requests by RPC and status code", ["rpc", "code"])
CANDIDATES = Histogram("kapparec_candidates", "Candidates one Recommend drew from each source", ["source"],
                       buckets=(0, 5, 10, 20, 50, 100, 200, 500))
ITEMS_BY_SOURCE = Counter("kapparec_items_served", "Items served, by candidate source", ["source"])
RESPONSES_BY_ORIGIN = Counter("kapparec_responses", "Responses by origin (full, degraded) and widening", ["served_from", "widened"])
CACHE_LOOKUPS = Counter("kapparec_cache_lookups", "Response cache lookups by result (hit, miss)", ["result"])
EVENTS_LOGGED = Counter("kapparec_events_logged", "Events appended to the log through LogEvents")
FEATURES_HEALTHY = Gauge("kapparec_features_healthy", "1 while Redis answers, 0 while serving degraded", multiprocess_mode="min")
REQUESTS_BY_BUCKET = Counter("kapparec_bucket_requests", "Recommend requests by A/B bucket ('' outside experiments)",
                             ["bucket"])
IMPRESSIONS_WRITTEN = Counter("kapparec_impressions_written", "Impressions the log acknowledged")
IMPRESSIONS_DROPPED = Counter("kapparec_impressions_dropped", "Impressions not written, by reason (queue_full, broker)",
                              ["reason"])
MODEL_LOADED = Gauge("kapparec_model_loaded", "1 for the model version this process serves", ["version"],
                     multiprocess_mode="max")


@functools.cache
def child(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once: ``labels()`` validates and takes a lock on every
    call, and a request makes about twenty of them."""
    return metric.labels(*labels)


def observe_stage(stage: str, seconds: float) -> None:
    child(STAGE_SECONDS, stage).observe(seconds)


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - started)
