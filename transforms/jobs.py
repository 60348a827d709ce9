"""The two jobs over the log: ``backfill`` (replay into a new version) and ``stream`` (follow it).

Both run ``transforms.pipeline.build_feature_pipeline``, which commits each bundle's features
together with the offsets they cover (compare-and-set, one Redis transaction): a backfill
reads [beginning, end snapshot) into a fresh version and publishes it when complete; the
continuous job is one long-lived pipeline following the log from the committed offsets of
the current version. A crash at any point leaves the store at a commit boundary, and the
restart resumes from there (exactly-once effect). When a backfill publishes a new version,
the continuous job's source ends (``VersionStop``) and the job follows the new version
from its offsets, without a restart of the command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field

import apache_beam as beam
import redis
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from featurestore import layout
from featurestore.lease import DEFAULT_TTL_S, WriterLease
from featurestore.maintenance import HEARTBEAT_S
from featurestore.redis_store import RedisFeatureStore
from kapparec.errors import KapparecError
from kapparec.threads import Periodic
from streams import offsets as log_offsets
from streams import topics
from transforms.bundled import CommitTarget
from transforms.commit_caps import DEFAULT_MAX_KEYS, STREAM_MAX_KEYS
from transforms.config import FeatureConfig
from transforms.flink_options import flink_args, has_flag
from transforms.job_control import CancelAfterStop, FlinkJob, FlinkJobFailed, RestartBudget
from transforms.pipeline import BatchPlan, CommitSettings, FollowPlan, build_feature_pipeline
from transforms.progress import ProgressBar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerSettings:
    """Which Beam runner runs each batch, and the options passed through to it."""

    runner: str = "DirectRunner"
    flink_master: str | None = None
    pipeline_args: tuple[str, ...] = ()
    flink_job_server_jar: str | None = None

    def options(self, follow: bool = False) -> PipelineOptions:
        args = ["--runner", self.runner, *self.pipeline_args]
        if follow and self.runner != "DirectRunner" and "--streaming" not in args:
            # A continuous job on Flink is one streaming job. The local runner drives the
            # followed source without it (its streaming mode ran one record per call).
            args.append("--streaming")
        if self.runner == "FlinkRunner":
            args += flink_args(args, self.flink_master, self.flink_job_server_jar, follow)
        elif self.flink_master:
            args += ["--flink_master", self.flink_master]
        if self.runner == "DirectRunner" and not has_flag(args, "--direct_num_workers"):
            args += ["--direct_num_workers", "1"]
        return PipelineOptions(args)


@dataclass
class BatchStats:
    """What a run did: records committed, commits (``batches``), seconds and Beam counters."""

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


# What the feature pipeline reads. A log without an impressions topic (written by other
# producers) is read as interactions and catalog alone.
READ_TOPICS = (topics.EVENTS, topics.ITEMS, topics.IMPRESSIONS)


def plan_batch(snapshot: dict[str, log_offsets.Ranges], committed: dict[tuple[str, int], int],
               high_water: dict[int, int]) -> BatchPlan:
    """The ranges of ``snapshot`` not yet committed (``log_offsets.plan_from``), empty ones left out."""
    planned = {topic: {p: (start, end) for p, (start, end) in ranges.items() if end > start}
               for topic, ranges in log_offsets.plan_from(snapshot, committed).items()}
    return BatchPlan(planned[topics.EVENTS], planned[topics.ITEMS], dict(high_water), planned[topics.IMPRESSIONS])


def run_pipeline(
    bootstrap: str,
    plan: BatchPlan | FollowPlan,
    commits: CommitSettings,
    config: FeatureConfig,
    runner: RunnerSettings,
    events_total: int = 0,
    stop: threading.Event | None = None,
) -> BatchStats:
    """Run the feature pipeline until its source ends; every bundle commits as it finishes.

    A job on Flink does not outlive this call: cancelled when the call leaves by an exception,
    or when it outlives ``stop`` (its source told to end) by ``STOP_GRACE_S``."""
    started = time.perf_counter()
    options = runner.options(follow=isinstance(plan, FollowPlan))
    # Read before the run: running the pipeline clears the runner from its options.
    flink_job = FlinkJob.of(options)
    pipeline = beam.Pipeline(options=options)
    build_feature_pipeline(pipeline, bootstrap, plan, commits, config)
    progress = ProgressBar(commits.target.redis_url, commits.progress_key, events_total, "backfill")
    with progress if commits.progress_key else nullcontext():
        result = pipeline.run()
        try:
            with CancelAfterStop(flink_job, stop) if stop and flink_job else nullcontext():
                result.wait_until_finish()
        except RuntimeError as error:
            # A job that failed on the cluster, as Beam's job server saw it end.
            if flink_job and result.state == PipelineState.FAILED:
                raise FlinkJobFailed(f"Flink job {flink_job.name} failed: {str(error).splitlines()[0]} "
                                     f"(the TaskManager's log holds the rest)") from error
            raise
        finally:
            if flink_job:
                flink_job.cancel()  # nothing to do when it ended
    counters = _counters(result)
    return BatchStats(counters.get("records_committed", 0), counters.get("commits", 0),
                      time.perf_counter() - started, counters)


def run_bounded(
    bootstrap: str,
    store: RedisFeatureStore,
    version: str,
    plan: BatchPlan,
    config: FeatureConfig,
    runner: RunnerSettings,
    *,
    max_records: int | None = None,
    max_keys: int = DEFAULT_MAX_KEYS,
    progress: bool = False,
    lease: str = "",
) -> BatchStats:
    """The pipeline over fixed ranges into ``version``, then the offsets moved to the ranges' ends."""
    progress_key = f"{layout.ROOT}:progress:{store.new_batch_id()}" if progress else None
    commits = CommitSettings(CommitTarget(store.url, version, bootstrap, lease), max_records, progress_key, max_keys)
    events_total = sum(stop - start for start, stop in plan.events.values())
    stats = run_pipeline(bootstrap, plan, commits, config, runner, events_total)
    store.advance_offsets(version, plan.end_offsets(), lease)
    return stats


def _counters(result) -> dict[str, int]:
    """Beam's counters by name, summed over steps, and each distribution's largest value as ``<name>_max``."""
    try:
        queried = result.metrics().query()
    except Exception:  # noqa: BLE001 - some runners report no metrics; they are informational
        return {}
    totals: dict[str, int] = {}
    for counter in queried["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    for distribution in queried.get("distributions", ()):
        name = f"{distribution.key.metric.name}_max"
        if distribution.committed and distribution.committed.count:
            totals[name] = max(totals.get(name, 0), distribution.committed.max)
    return totals


def backfill(
    bootstrap: str,
    redis_url: str,
    config: FeatureConfig | None = None,
    runner: RunnerSettings = RunnerSettings(),
    progress: bool = True,
    max_keys: int = DEFAULT_MAX_KEYS,
    accept_log_retention: bool = False,
) -> tuple[str, BatchStats]:
    """Replay [beginning, end snapshot) of the log into a new version and publish it.

    ``max_keys`` bounds the merged state a bundle holds before it commits: the backfill's
    memory, whatever the log's length. A log whose topics delete history is refused unless
    ``accept_log_retention``: the replay would silently differ from the stream."""
    store = RedisFeatureStore(redis_url)
    config = config or FeatureConfig()
    topics.refuse_lossy_retention(bootstrap, config.attribution_retention_ms, accept_log_retention)
    snapshot = log_offsets.log_snapshot(bootstrap, READ_TOPICS)
    version = store.create_version("backfill", config.pinned())
    plan = plan_batch(snapshot, {}, {})
    with _Heartbeat(store, version):
        stats = run_bounded(bootstrap, store, version, plan, config, runner, max_keys=max_keys, progress=progress)
    store.publish(version)
    return version, stats


class _Heartbeat(Periodic):
    """Beats a build's heartbeat while it runs, so garbage collection tells it from a crashed one."""

    def __init__(self, store: RedisFeatureStore, version: str, interval_s: float = HEARTBEAT_S):
        super().__init__(interval_s, "build-heartbeat")
        self._store, self._version = store, version

    def tick(self) -> None:
        self._store.heartbeat(self._version)


class VersionStop:
    """Ends a followed read when the job is asked to stop or ``version`` is no longer current.

    Checked by the source whenever a partition's read resumes, so a published backfill takes
    over within one round. Asked of Redis at most every ``CHECK_EVERY_S``: a round resumes
    every partition, and one read per resume was a tenth of the job's time under load.
    Picklable: the client is made on use. ``lifetime_s`` also ends the read that long after its
    first check on the worker, so a job that took long to submit still reads for all of it.
    """

    CHECK_EVERY_S = 0.05

    def __init__(self, redis_url: str, version: str, stop_key: str, lifetime_s: float | None = None):
        self.redis_url, self.version, self.stop_key, self.lifetime_s = redis_url, version, stop_key, lifetime_s
        self._client = None
        self._checked_at, self._stopped, self._ends_at = -float("inf"), False, None

    def __getstate__(self):
        # Monotonic clocks are per machine: a copy on a worker checks, and starts its lifetime, at its first resume.
        return {**self.__dict__, "_client": None, "_checked_at": -float("inf"), "_ends_at": None}

    def should_stop(self) -> bool:
        if self._stopped or time.monotonic() - self._checked_at < self.CHECK_EVERY_S:
            return self._stopped
        if self.lifetime_s is not None:
            self._ends_at = self._ends_at or time.monotonic() + self.lifetime_s
            if time.monotonic() >= self._ends_at:
                self._stopped = True
                return True
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self._checked_at = time.monotonic()
        try:
            stop, current = self._client.mget(self.stop_key, layout.CURRENT)
        except redis.RedisError:
            # Asked again at the next check: a Redis busy or away for a moment is no reason to
            # end the read (its commits fail by themselves if it stays away).
            return False
        self._stopped = stop is not None or current != self.version
        return self._stopped


def stream(
    bootstrap: str,
    redis_url: str,
    config: FeatureConfig | None = None,
    runner: RunnerSettings = RunnerSettings(),
    *,
    once: bool = False,
    poll_interval_s: float = 0.2,
    max_batch_records: int | None = None,
    max_commit_keys: int = STREAM_MAX_KEYS,
    stop: threading.Event | None = None,
    on_commit=None,
    wait: bool = False,
    lease_ttl_s: float = DEFAULT_TTL_S,
    accept_log_retention: bool = False,
    job_lifetime_s: float | None = None,
) -> BatchStats:
    """Follow the log until ``stop`` is set (or, with ``once``, up to the end seen at start).

    One continuous job per store: it holds the store's writer lease (``featurestore.lease``)
    and every commit checks it, so a second job exits with ``WriterBusy`` naming the holder
    (``wait``: it waits for the lease instead). ``on_commit(version, records)`` is called from
    a watcher thread as committed offsets move. A log whose topics delete history is refused
    unless ``accept_log_retention``, as by ``backfill``. ``job_lifetime_s`` ends each run of the
    pipeline once it has read for that long, and the next run starts from the committed offsets.
    """
    config = config or FeatureConfig()
    topics.refuse_lossy_retention(bootstrap, config.attribution_retention_ms, accept_log_retention)
    with WriterLease(redis_url, lease_ttl_s).acquire(wait) as lease:
        return _stream(bootstrap, redis_url, config, runner, lease, once=once,
                       poll_interval_s=poll_interval_s, max_batch_records=max_batch_records,
                       max_commit_keys=max_commit_keys,
                       stop=stop or threading.Event(), on_commit=on_commit, job_lifetime_s=job_lifetime_s)


def _stream(bootstrap: str, redis_url: str, config: FeatureConfig, runner: RunnerSettings, lease: WriterLease, *,
            once: bool, poll_interval_s: float, max_batch_records: int | None, max_commit_keys: int,
            stop: threading.Event,
            on_commit, job_lifetime_s: float | None) -> BatchStats:
    store = RedisFeatureStore(redis_url)
    if once:
        version = _stream_version(store, None, config)
        plan = plan_batch(log_offsets.log_snapshot(bootstrap, READ_TOPICS), store.offsets(version),
                          store.high_water(version, topics.EVENTS))
        return run_bounded(bootstrap, store, version, plan, config, runner, max_records=max_batch_records,
                           max_keys=max_commit_keys,
                           lease=lease.value)
    total = BatchStats()
    version = None
    restarts = RestartBudget()
    while not stop.is_set():
        version = _stream_version(store, version, config)
        stop_key = f"{layout.ROOT}:stream:stop:{store.new_batch_id()}"
        watcher = _CommitWatcher(store, version, stop, stop_key, poll_interval_s, on_commit)
        watcher.start()
        try:
            planned = log_offsets.plan_from(log_offsets.log_snapshot(bootstrap, READ_TOPICS), store.offsets(version))
            starts = {topic: {p: start for p, (start, _) in ranges.items()} for topic, ranges in planned.items()}
            plan = FollowPlan(starts[topics.EVENTS], starts[topics.ITEMS], store.high_water(version, topics.EVENTS),
                              VersionStop(redis_url, version, stop_key, job_lifetime_s), starts[topics.IMPRESSIONS])
            commits = CommitSettings(CommitTarget(redis_url, version, bootstrap, lease.value), max_batch_records,
                                     max_keys=max_commit_keys)
            with _state_kept(store, version, lease), _resubmitted_after_failure(restarts, lease):
                total.add(run_pipeline(bootstrap, plan, commits, config, runner, stop=stop))
        finally:
            watcher.finish()
    return total


class StoreStateLost(KapparecError):
    """The store no longer holds the version a running job extends: Redis lost its data."""


def _refuse_lost_state(store: RedisFeatureStore, version: str) -> None:
    """Raises ``StoreStateLost`` when the store has no current version while the job followed ``version``.

    Nothing but a Redis that lost its data (restarted without its append-only file, flushed)
    unsets ``kr:current``: a backfill or a rollback only moves it. Carrying on would rebuild the
    features from the log's beginning under a lease that vanished with the rest, and end in a
    lost-lease error that names the wrong cause."""
    if store.current_version() is None:
        raise StoreStateLost(
            f"Redis lost the feature store's state under the running job (feature version {version}, its offsets "
            f"and the writer lease are gone: restarted without its append-only file?); run `kapparec backfill` "
            f"to rebuild it from the log, then start `kapparec stream` again")


def _name_lost_state(store: RedisFeatureStore, version: str) -> None:
    """``_refuse_lost_state`` while a run's own error is being raised: a store that cannot be read
    just now (BUSY, away) names no other cause, so that error stands."""
    with suppress(redis.RedisError):
        _refuse_lost_state(store, version)


@contextmanager
def _state_kept(store: RedisFeatureStore, version: str, lease: WriterLease) -> Iterator[None]:
    """One run of the job over ``version``. A run that Redis dropped out of (a restart, BUSY) ends quietly
    once Redis answers again within the lease's term, and the job plans its next run from the
    committed offsets, which the merge's compare-and-set keeps exact whether or not the commit in
    flight landed; past the term the lease has lapsed and the error stands. Whatever ends a run
    (a refused commit, a lost lease), a store that lost its state is named as the cause."""
    try:
        yield
    except redis.RedisError as error:
        if not _redis_away(error):
            _name_lost_state(store, version)
            raise
        _wait_for_redis(store, error, lease.ttl_ms / 1000)
        _refuse_lost_state(store, version)
        log.info("event=redis_back stream resumes from the committed offsets of %s", version)
    except Exception:
        _name_lost_state(store, version)
        raise
    else:
        _refuse_lost_state(store, version)


@contextmanager
def _resubmitted_after_failure(restarts: RestartBudget, lease: WriterLease) -> Iterator[None]:
    """One run of the job on Flink; a run that failed on the cluster (a TaskManager or an SDK worker
    pool lost) ends quietly while ``restarts`` allows it, and the job's next run is planned from the
    committed offsets like any other. The command keeps its writer lease across the resubmission,
    so no second writer can start in the gap; a lost lease is a failure no resubmission cures."""
    try:
        yield
    except FlinkJobFailed as failure:
        if lease.lost.is_set() or not restarts.allows(failure):
            raise


def _redis_away(error: redis.RedisError) -> bool:
    """Redis not answering for now: unreachable, loading its data, or BUSY while another client's script runs."""
    return isinstance(error, redis.ConnectionError) or str(error).startswith("BUSY")


def _wait_for_redis(store: RedisFeatureStore, away: redis.RedisError, within_s: float) -> None:
    log.warning("event=redis_away error=%r waiting_s=%g", str(away), within_s)
    deadline = time.monotonic() + within_s
    while True:
        try:
            store.client.ping()
            return
        except redis.RedisError as error:
            if not _redis_away(error) or time.monotonic() > deadline:
                raise away from None
            time.sleep(0.2)


class _CommitWatcher(Periodic):
    """Beside a running pipeline: turns ``stop`` into the pipeline's stop key, reports commits."""

    def __init__(self, store: RedisFeatureStore, version: str, stop: threading.Event, stop_key: str,
                 poll_interval_s: float, on_commit):
        super().__init__(poll_interval_s, "commit-watcher")
        self._store, self._version, self._stop_requested, self._stop_key = store, version, stop, stop_key
        self._on_commit = on_commit
        self._seen = self._events_committed()

    def tick(self) -> None:
        if self._stop_requested.is_set():
            self._store.client.set(self._stop_key, 1, ex=3600)
        now = self._events_committed()
        if now > self._seen and self._on_commit:
            self._on_commit(self._version, now - self._seen)
        self._seen = now

    def _events_committed(self) -> int:
        return sum(o for (t, _), o in self._store.offsets(self._version).items() if t == topics.EVENTS)

    def finish(self) -> None:
        self.stop()
        self.join()
        self._store.client.delete(self._stop_key)


def _stream_version(store: RedisFeatureStore, following: str | None, config: FeatureConfig) -> str:
    """The version to extend: the current one (a published backfill takes over), created if none.

    A version keeps the feature configuration it was built with: extending it with other
    settings would mix two meanings in one state, so that is refused with what differs.
    """
    version = store.current_version()
    if version is None:
        version = store.create_version("stream", config.pinned())
        store.publish(version)
    pinned = store.versions().get(version, {}).get("config")
    if pinned is None:
        store.pin_config(version, config.pinned())  # a version from before configurations were pinned
    elif config.differences(pinned):
        raise KapparecError(
            f"feature version {version} was built with other settings ({'; '.join(config.differences(pinned))}): "
            f"run `kapparec backfill` with this job's settings to build a version for them, or start the stream "
            f"with the version's settings")
    if version != following:
        log.info("stream: following feature version %s", version)
    return version
