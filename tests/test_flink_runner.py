"""The feature pipeline through Beam's FlinkRunner: on an embedded job service, and on a real Flink cluster.

The cluster is ``tests.flink_helpers``' (started as ``kapparec infra up --with-flink`` starts it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from featurestore import layout
from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from tests.faults import events_committed, wait_for
from tests.flink_helpers import flink_cluster, job_states, local_flink, running_jobs  # noqa: F401 - fixtures
from tests.logs import produce_synthetic
from tests.test_golden import assert_store_matches_golden, produce_golden_log
from transforms.jobs import RunnerSettings, backfill

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))

def backfill_dump(stack, runner: RunnerSettings) -> list[str]:
    version, _ = backfill(stack.bootstrap, stack.redis_url, runner=runner, progress=False)
    return list(RedisFeatureStore(stack.redis_url).dump(version))


def test_flink_runner_client_path_matches_the_direct_runner(stack):
    """FlinkRunner's portable client (pipeline proto, job service, LOOPBACK workers). ``--job_endpoint=embed``
    does not run Flink: it runs Beam's in-process FnApiRunner behind the job API."""
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=25, events=300, seed=4))
    direct = backfill_dump(stack, RunnerSettings())
    flink_client = backfill_dump(
        stack, RunnerSettings("FlinkRunner", pipeline_args=("--job_endpoint=embed", "--environment_type=LOOPBACK"))
    )
    assert len(direct) > 50
    assert flink_client == direct


def test_flink_runner_without_a_local_cluster_or_a_master_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "KAPPAREC_RUN_DIR": str(tmp_path)}
    refused = subprocess.run([KAPPAREC, "backfill", "--runner", "FlinkRunner"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "kapparec infra up --with-flink" in refused.stderr, refused.stderr


def test_stream_on_flink_with_checkpointing_is_refused_in_one_line(tmp_path):
    """Its checkpoints would never complete (docs/flink.md): refused before any cluster is looked for."""
    env = {**os.environ, "KAPPAREC_RUN_DIR": str(tmp_path)}
    refused = subprocess.run([KAPPAREC, "stream", "--runner", "FlinkRunner", "--checkpointing_interval", "5000"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--checkpointing_interval" in refused.stderr, refused.stderr


@pytest.mark.flink
def test_backfill_on_flink_writes_the_golden_dump_and_finishes(stack, local_flink):
    """The smoke test of the Flink runner, in the default suite: about a minute with the cluster's start."""
    log = produce_golden_log(stack.bootstrap)
    before = job_states(local_flink)

    backfill(stack.bootstrap, stack.redis_url, runner=RunnerSettings("FlinkRunner"), progress=False)

    assert_store_matches_golden(stack, log)
    ran = {jid: state for jid, state in job_states(local_flink).items() if jid not in before}
    assert list(ran.values()) == ["FINISHED"]


FIRST, ALL = 500, 900  # events logged before the stream starts, and in all


def stream_over_a_first_part(stack, seed: int, *flags: str) -> tuple[SyntheticLog, list, subprocess.Popen]:
    """A synthetic log with its first events logged, and ``kapparec stream --runner FlinkRunner *flags`` on it."""
    log = SyntheticLog(users=30, items=40, events=ALL, seed=seed)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:FIRST])
    job = subprocess.Popen([KAPPAREC, "stream", "--runner", "FlinkRunner", *flags], env=os.environ.copy(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return log, records, job


def stop(job: subprocess.Popen) -> str:
    """SIGTERM, as Ctrl-C or a supervisor stops it; the command's output."""
    job.send_signal(signal.SIGTERM)
    return job.communicate(timeout=120)[0]


def assert_stopped_leaving_no_job(job: subprocess.Popen, output: str, master: str, followed_version: str,
                                  stack) -> None:
    """The command ended cleanly, no job of it is left on Flink, and the version it followed equals a backfill."""
    assert job.returncode == 0, output
    assert running_jobs(master) == []
    store = RedisFeatureStore(stack.redis_url)
    rebuilt, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert list(store.dump(followed_version)) == list(store.dump(rebuilt))


@pytest.mark.slow
@pytest.mark.flink
def test_stream_on_flink_follows_a_backfill_and_stops_leaving_no_job_and_no_lease(stack, local_flink):
    log, records, job = stream_over_a_first_part(stack, 4)
    store = RedisFeatureStore(stack.redis_url)
    try:
        wait_for(lambda: events_committed(store) == FIRST, 240, "the Flink job to commit the first events")
        assert len(running_jobs(local_flink)) == 1
        first_job = running_jobs(local_flink)
        backfilled, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
        # The source ends on the new version; the command resubmits the job on it.
        gap_s = wait_for(lambda: running_jobs(local_flink) not in ([], first_job), 240, "the job on the new version")
        print(f"\nthe continuous job followed the backfilled version after a {gap_s:.1f} s gap")
        produce_synthetic(stack.bootstrap, log, records=records[FIRST:], catalog=False)
        wait_for(lambda: events_committed(store) == ALL, 240, "the Flink job to commit all events")
        assert store.require_current_version() == backfilled
    finally:
        output = stop(job)
    assert_stopped_leaving_no_job(job, output, local_flink, backfilled, stack)
    assert stack.redis().get(layout.STREAM_LOCK) is None


@pytest.mark.slow
@pytest.mark.flink
def test_stream_on_flink_with_a_job_lifetime_is_submitted_again_and_misses_nothing(stack, local_flink):
    """``--job-lifetime``: each Flink job ends (FINISHED) after it, and the next starts from the committed offsets."""
    log, records, job = stream_over_a_first_part(stack, 6, "--job-lifetime", "20")
    store = RedisFeatureStore(stack.redis_url)
    try:
        wait_for(lambda: events_committed(store) == FIRST, 240, "the first job to commit the first events")
        first_job = running_jobs(local_flink)
        wait_for(lambda: running_jobs(local_flink) not in ([], first_job), 240, "the job submitted again")
        assert job_states(local_flink)[first_job[0]] == "FINISHED"
        produce_synthetic(stack.bootstrap, log, records=records[FIRST:], catalog=False)
        wait_for(lambda: events_committed(store) == ALL, 240, "the next job to commit all events")
    finally:
        output = stop(job)
    assert_stopped_leaving_no_job(job, output, local_flink, store.require_current_version(), stack)
