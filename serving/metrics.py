"""Prometheus metrics of the serving process (``prometheus_client``), exported on ``--metrics-port``.

With several worker processes the metrics live in ``PROMETHEUS_MULTIPROC_DIR`` and the parent
serves their sum, the client library's multi-process mode.

A request's own updates do not touch the metrics: each count or observation is one append to a
queue, its stages' timings go as one append when it ends (``StageClock``), and a background
thread applies the queues every ``FLUSH_S``, summed per metric (``flush``). In multi-process
mode every update takes a process-wide lock and writes an mmap (about 7 µs per histogram
observation), which was about 9% of a Recommend's CPU. So a
worker's figures reach the parent up to ``FLUSH_S`` late; a single process flushes before each
scrape, so its figures are exact.
"""

from __future__ import annotations

import collections
import functools
import threading
import time

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

# How often the queued updates reach the metrics (at most this late in a multi-process scrape).
FLUSH_S = 1.0


class _FlushBeforeScrape:
    """Registered before every metric, so a single process's scrape applies the queue first."""

    def describe(self):
        return []  # no metrics of its own

    def collect(self):
        flush()
        return []


REGISTRY.register(_FlushBeforeScrape())
_queue: collections.deque = collections.deque()
_stage_queue: collections.deque = collections.deque()  # each a request's ``StageClock.timings``
_flush_lock = threading.Lock()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 0.5, 1.0)

RPC_SECONDS = Histogram("kapparec_rpc_seconds", "RPC latency", ["rpc"], buckets=LATENCY_BUCKETS)
# The handler's own CPU (its thread's, from entering the servicer to leaving it): beside the
# process's CPU it separates the request's work from gRPC's, thread hand-offs' and background threads'.
RPC_CPU_SECONDS = Counter("kapparec_rpc_cpu_seconds", "CPU seconds the handling thread spent inside each RPC's servicer",
                          ["rpc"])
STAGE_SECONDS = Histogram("kapparec_funnel_stage_seconds", "Funnel stage latency", ["stage"], buckets=LATENCY_BUCKETS)
# Each stage's CPU on the handling thread: beside the wall times above (which include waiting for
# Redis and for the GIL) it says where a request's CPU goes.
STAGE_CPU_SECONDS = Counter("kapparec_stage_cpu_seconds", "CPU seconds the handling thread spent in each request stage",
                            ["stage"])
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
def child(metric, *labels: str) -> "Deferred":
    """``metric.labels(*labels)`` (``metric`` itself when it has no labels) looked up once
    (``labels()`` validates and takes a lock on every call), updated through the queue."""
    _flusher.start()
    return Deferred(metric.labels(*labels) if labels else metric)


class Deferred:
    """A counter's or histogram's child whose ``inc`` and ``observe`` wait in the queue for ``flush``."""

    __slots__ = ("metric",)

    def __init__(self, metric: Counter | Histogram):
        self.metric = metric

    def inc(self, amount: float = 1.0) -> None:
        _queue.append((self.metric, amount))  # deque.append is atomic: no lock on the request path

    observe = inc


def flush() -> None:
    """Apply every queued update: each counter incremented once by its sum, each histogram's sum
    and buckets once each, as its ``observe`` would have left them.

    A worker queues tens of thousands of updates a second, and this runs holding the GIL that
    requests need, so the grouping is numpy's, not a Python loop over the updates."""
    with _flush_lock:
        batch = [_queue.popleft() for _ in range(len(_queue))]  # what later requests append waits for the next flush
        for _ in range(len(_stage_queue)):
            for stage, seconds, cpu_seconds in _stage_queue.popleft():
                batch.append((child(STAGE_SECONDS, stage).metric, seconds))
                batch.append((child(STAGE_CPU_SECONDS, stage).metric, cpu_seconds))
        if not batch:
            return
        queued, amounts = zip(*batch)
        index: dict = {}
        codes = np.fromiter((index.setdefault(metric, len(index)) for metric in queued), dtype=np.intp, count=len(batch))
        amounts = np.asarray(amounts, dtype=np.float64)
        totals = np.bincount(codes, weights=amounts, minlength=len(index)).tolist()
        for metric, code in index.items():
            if isinstance(metric, Histogram):
                _observe_all(metric, amounts[codes == code], totals[code])
            else:
                metric.inc(totals[code])


def _observe_all(histogram: Histogram, amounts: np.ndarray, total: float) -> None:
    """``histogram.observe(a)`` for each of ``amounts`` (which sum to ``total``), with one write per
    bucket touched. prometheus_client has no batch observe, so this writes what its ``observe``
    writes (``_sum``, and the first bucket whose bound holds the amount), in the version
    requirements.lock pins; tests/test_serving_stages.py holds the two equal."""
    histogram._sum.inc(total)
    buckets = np.bincount(np.searchsorted(histogram._upper_bounds, amounts, side="left"))
    for bucket in np.flatnonzero(buckets).tolist():
        histogram._buckets[bucket].inc(int(buckets[bucket]))


class _Flusher:
    """The thread that applies the queue every ``FLUSH_S``, started by the first ``child``."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            flush()


_flusher = _Flusher()


class StageClock:
    """One request's stages: ``with clock.stage(name):`` times a block (its wall and its thread's CPU),
    and ``record`` hands the request's timings to the metrics in one append, when it ends.

    Stages do not nest: every part of a request runs in one stage, so their CPU adds up to the
    handler's. A request times about fifteen blocks, so each costs two clock reads and an append."""

    __slots__ = ("timings", "_name", "_wall", "_cpu")

    def __init__(self):
        self.timings: list[tuple[str, float, float]] = []  # (stage, wall seconds, thread CPU seconds)

    def stage(self, name: str) -> "StageClock":
        self._name = name
        return self

    def __enter__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def __exit__(self, *_) -> None:
        self.timings.append((self._name, time.perf_counter() - self._wall, time.thread_time() - self._cpu))

    def record(self) -> None:
        _flusher.start()
        _stage_queue.append(self.timings)
