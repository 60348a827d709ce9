"""Exactly once on Flink under a crash: ``kill -9`` of the TaskManager, and of the SDK worker pool,
while the continuous job runs under 2,000 events/s.

The continuous job runs without Flink checkpoints, so Flink restarts nothing: a job that lost
its TaskManager or its SDK workers FAILS, and ``kapparec stream`` submits it again from the
committed offsets (``transforms.job_control.RestartBudget``), holding its writer lease
throughout. A standalone cluster does not replace what died, so the test restarts it, as a
supervisor beside the TaskManager would. Afterwards the store must equal a clean DirectRunner
backfill of the same log, every acknowledged event must be in the log once, and the lease must
be the one the job took at its start (no second writer).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from featurestore import layout
from featurestore.redis_store import RedisFeatureStore
from infra.flink import FlinkCluster
from infra.services import group_pids, pid_alive
from streams.synthetic import SyntheticLog
from tests.faults import (PacedProducer, StreamJob, assert_acknowledged_exactly_once, assert_equals_a_clean_backfill,
                          caught_up, events_committed, log_values, report_recovery, wait_for)
from tests.flink_helpers import flink_cluster, local_flink, running_jobs  # noqa: F401 - fixtures
from tests.logs import produce_synthetic

pytestmark = [pytest.mark.faults, pytest.mark.flink]

EVENTS = 40_000
RATE = 2_000  # events/s: the kill falls while they arrive


def kill_taskmanager(cluster: FlinkCluster) -> Callable[[], None]:
    """SIGKILL to the TaskManager's JVM; returns how to start another."""
    (pid,) = cluster.taskmanager_pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 30, "the TaskManager gone")
    return cluster.start_taskmanager


def kill_worker_pool(cluster: FlinkCluster) -> Callable[[], None]:
    """SIGKILL to the worker pool's process group: the pool and every SDK worker it started."""
    pool = cluster.worker_pool()
    pid = pool.recorded_pid()
    assert pid is not None, "no worker pool runs"
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not group_pids(pid), 30, "the worker pool and its workers gone")
    return pool.start


@pytest.mark.parametrize("kill", [kill_taskmanager, kill_worker_pool], ids=["taskmanager", "worker_pool"])
def test_a_killed_flink_process_loses_and_duplicates_nothing(stack, local_flink, flink_cluster, tmp_path, kill):
    log = SyntheticLog(users=80, items=100, events=EVENTS, seed=7)
    produce_synthetic(stack.bootstrap, log, records=[])  # the catalog; the events arrive under the kill
    store = RedisFeatureStore(stack.redis_url)
    job = StreamJob(stack.bootstrap, stack.redis_url, tmp_path, "--runner", "FlinkRunner", "--wait")
    producer = PacedProducer(stack.bootstrap, list(log.records()), RATE)
    try:
        wait_for(lambda: len(running_jobs(local_flink)) == 1 or not job.running(), 240, "the Flink job RUNNING")
        first_job = running_jobs(local_flink)
        lease = stack.redis().get(layout.STREAM_LOCK)
        producer.start()
        wait_for(lambda: events_committed(store) >= EVENTS // 4 or not job.running(), 120, "a quarter committed")
        committed_before = events_committed(store)
        killed_at = time.monotonic()
        restart = kill(flink_cluster)
        restart()
        wait_for(lambda: running_jobs(local_flink) not in ([], first_job) or not job.running(), 240,
                 "the job submitted again")
        assert job.running(), job.errors()  # the command itself submitted it
        report_recovery(f"flink_{kill.__name__}", "a new Flink job RUNNING", time.monotonic() - killed_at)
        wait_for(lambda: events_committed(store) > committed_before or not job.running(), 240, "commits again")
        assert job.running(), job.errors()
        report_recovery(f"flink_{kill.__name__}", "the job commits again", time.monotonic() - killed_at)
        producer.join()
        wait_for(lambda: caught_up(stack.bootstrap, store) or not job.running(), 240, "the job catching up")
        assert job.running(), job.errors()
        assert stack.redis().get(layout.STREAM_LOCK) == lease  # the one writer all along
    finally:
        exit_code = job.stop()
    assert exit_code == 0, job.errors()
    assert running_jobs(local_flink) == []
    assert committed_before < EVENTS  # killed mid-log
    assert events_committed(store) == EVENTS
    assert producer.failures == []
    assert_acknowledged_exactly_once(log_values(stack.bootstrap), producer.acknowledged)
    assert_equals_a_clean_backfill(stack.bootstrap, stack.redis_url)
