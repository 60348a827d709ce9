"""The two jobs over the log: ``backfill`` (replay into a new version) and ``stream`` (follow it).

Both run ``transforms.pipeline.build_feature_pipeline``: a backfill is one batch over
[beginning, end snapshot) into a fresh version, published when complete; the continuous
job is a loop of batches over the offsets that arrived since its last commit, each merged
together with its end offsets in one Redis transaction (exactly-once effect: a crash at any
point leaves the store at a batch boundary, and the restart resumes from there).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
import threading
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from featurestore.lookups import RedisSessionItems
from featurestore.redis_store import RedisFeatureStore
from streams import offsets as log_offsets
from streams import topics
from transforms.config import FeatureConfig
from transforms.pipeline import BatchPlan, BatchTarget, build_feature_pipeline
from transforms.progress import ProgressBar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerSettings:
    """Which Beam runner runs each batch, and the options passed through to it."""

    runner: str = "DirectRunner"
    flink_master: str | None = None
    pipeline_args: tuple[str, ...] = ()
    flink_job_server_jar: str | None = None

    def options(self) -> PipelineOptions:
        args = ["--runner", self.runner, *self.pipeline_args]
        if self.flink_master:
            args += ["--flink_master", self.flink_master]
        if self.flink_job_server_jar:
            args += ["--flink_job_server_jar", self.flink_job_server_jar]
        if self.runner == "DirectRunner" and not any(a.startswith("--direct_num_workers") for a in args):
            args += ["--direct_num_workers", "1"]
        return PipelineOptions(args)


@dataclass
class BatchStats:
    records: int = 0
    batches: int = 0
    seconds: float = 0.0
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def add(self, other: "BatchStats") -> None:
        self.records += other.records
        self.batches += other.batches
        self.seconds += other.seconds
        for name, value in other.metrics.items():
            self.metrics[name] = self.metrics.get(name, 0) + value


def plan_batch(
    bootstrap: str,
    committed: dict[tuple[str, int], int],
    high_water: dict[int, int],
    ends: dict[tuple[str, int], int] | None = None,
    max_records: int | None = None,
) -> BatchPlan:
    """Ranges from the committed offsets to the end snapshot, each capped at ``max_records`` per partition."""
    if ends is None:
        ends = snapshot_ends(bootstrap)
    ranges: dict[str, dict[int, tuple[int, int]]] = {topics.EVENTS: {}, topics.ITEMS: {}}
    for (topic, partition), end in ends.items():
        start = committed.get((topic, partition), 0)
        stop = min(end, start + max_records) if max_records else end
        if stop > start:
            ranges[topic][partition] = (start, stop)
    return BatchPlan(ranges[topics.EVENTS], ranges[topics.ITEMS], dict(high_water))


def snapshot_ends(bootstrap: str) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for topic in (topics.EVENTS, topics.ITEMS):
        ends.update({(topic, p): end for p, end in log_offsets.end_offsets(bootstrap, topic).items()})
    return ends


def run_batch(
    bootstrap: str,
    store: RedisFeatureStore,
    version: str,
    plan: BatchPlan,
    config: FeatureConfig,
    runner: RunnerSettings,
    *,
    atomic: bool,
    read_prior_state: bool,
    progress: bool = False,
) -> BatchStats:
    """Run the feature pipeline over one plan and merge its result into ``version``."""
    started = time.perf_counter()
    batch = store.new_batch_id()
    target = BatchTarget(store.url, version, batch, progress_key=f"kr:progress:{batch}" if progress else None)
    prior = RedisSessionItems(store.url, version) if read_prior_state else None
    pipeline = beam.Pipeline(options=runner.options())
    build_feature_pipeline(pipeline, bootstrap, plan, target, config, prior_session_items=prior)
    events_total = sum(stop - start for start, stop in plan.events.values())
    with ProgressBar(store.url, target.progress_key, events_total, "backfill") if progress else nullcontext():
        result = pipeline.run()
        result.wait_until_finish()
    store.merge_batch(version, batch, plan.end_offsets(), atomic=atomic)
    return BatchStats(plan.records, 1, time.perf_counter() - started, _counters(result))


def _counters(result) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - some runners report no metrics; they are informational
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return totals


def backfill(
    bootstrap: str,
    redis_url: str,
    config: FeatureConfig | None = None,
    runner: RunnerSettings = RunnerSettings(),
    progress: bool = True,
) -> tuple[str, BatchStats]:
    """Replay [beginning, end snapshot) of the log into a new version and publish it."""
    store = RedisFeatureStore(redis_url)
    ends = snapshot_ends(bootstrap)
    version = store.create_version("backfill")
    plan = plan_batch(bootstrap, {}, {}, ends=ends)
    stats = run_batch(
        bootstrap, store, version, plan, config or FeatureConfig(), runner,
        atomic=False, read_prior_state=False, progress=progress,
    )
    store.publish(version)
    return version, stats


def stream(
    bootstrap: str,
    redis_url: str,
    config: FeatureConfig | None = None,
    runner: RunnerSettings = RunnerSettings(),
    *,
    once: bool = False,
    poll_interval_s: float = 0.2,
    max_batch_records: int | None = 200_000,
    stop: threading.Event | None = None,
    on_batch=None,
) -> BatchStats:
    """Follow the log in micro-batches until ``stop`` is set (or, with ``once``, the end seen at start).

    One continuous job per store: two would both merge the same offset ranges (no lock yet).
    """
    store = RedisFeatureStore(redis_url)
    config = config or FeatureConfig()
    stop = stop or threading.Event()
    total = BatchStats()
    final_ends = snapshot_ends(bootstrap) if once else None
    version = None
    while not stop.is_set():
        version = _stream_version(store, version)
        plan = plan_batch(
            bootstrap,
            store.offsets(version),
            store.high_water(version, topics.EVENTS),
            ends=final_ends,
            max_records=max_batch_records,
        )
        if plan.records == 0:
            if once:
                break
            stop.wait(poll_interval_s)
            continue
        stats = run_batch(bootstrap, store, version, plan, config, runner, atomic=True, read_prior_state=True)
        total.add(stats)
        if on_batch:
            on_batch(version, plan, stats)
    return total


def _stream_version(store: RedisFeatureStore, following: str | None) -> str:
    """The version to extend: the current one (a published backfill takes over), created if none."""
    version = store.current_version()
    if version is None:
        version = store.create_version("stream")
        store.publish(version)
    if version != following:
        # Batches that died before merging left stages behind; their offsets never advanced.
        store.discard_stages(version)
        log.info("stream: following feature version %s", version)
    return version
