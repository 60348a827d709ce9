"""The feature pipeline through Beam's FlinkRunner: on an embedded job service, and on a real Flink cluster.

The cluster is started the way ``kapparec infra up --with-flink`` starts it (the job-server jar
resolved with mvn, the EXTERNAL worker pool beside the TaskManager). When the jar cannot be
resolved or the cluster does not come up, these tests fail: a skipped smoke test proves nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featurestore import layout
from featurestore.redis_store import RedisFeatureStore
from infra.flink import FlinkCluster
from infra.health import flink_jobs
from infra.services import free_port
from streams.synthetic import SyntheticLog
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


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A local cluster as ``infra up --with-flink`` starts it, in a run directory of its own."""
    cluster = FlinkCluster(tmp_path_factory.mktemp("flink"), free_port())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def local_flink(flink_cluster, monkeypatch) -> str:
    """The cluster as the jobs' default: ``--runner FlinkRunner`` with no other flag runs on it."""
    monkeypatch.setenv("KAPPAREC_RUN_DIR", str(flink_cluster.run_dir))
    return f"localhost:{flink_cluster.port}"


def job_states(master: str) -> dict[str, str]:
    jobs = flink_jobs(master)
    assert jobs is not None, f"Flink at {master} does not answer"
    return {job["jid"]: job["state"] for job in jobs}


@pytest.mark.slow
@pytest.mark.flink
def test_backfill_on_flink_writes_the_golden_dump_and_finishes(stack, local_flink):
    log = produce_golden_log(stack.bootstrap)
    before = job_states(local_flink)

    backfill(stack.bootstrap, stack.redis_url, runner=RunnerSettings("FlinkRunner"), progress=False)

    assert_store_matches_golden(stack, log)
    ran = {jid: state for jid, state in job_states(local_flink).items() if jid not in before}
    assert list(ran.values()) == ["FINISHED"]


def events_committed(store: RedisFeatureStore) -> int:
    version = store.current_version()
    return sum(o for (t, _), o in store.offsets(version).items() if t == "events") if version else 0


def wait_for(condition, timeout_s: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def running_jobs(master: str) -> list[str]:
    return [jid for jid, state in job_states(master).items() if state == "RUNNING"]


@pytest.mark.slow
@pytest.mark.flink
def test_stream_on_flink_follows_a_backfill_and_stops_leaving_no_job_and_no_lease(stack, local_flink):
    log = SyntheticLog(users=30, items=40, events=900, seed=4)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:500])
    store = RedisFeatureStore(stack.redis_url)
    job = subprocess.Popen([KAPPAREC, "stream", "--runner", "FlinkRunner"], env=os.environ.copy(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: events_committed(store) == 500, 240, "the Flink job to commit the first 500 events")
        assert len(running_jobs(local_flink)) == 1
        first_job = running_jobs(local_flink)
        backfilled, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
        # The source ends on the new version; the command resubmits the job on it.
        gap_s = wait_for(lambda: running_jobs(local_flink) not in ([], first_job), 240, "the job on the new version")
        print(f"\nthe continuous job followed the backfilled version after a {gap_s:.1f} s gap")
        produce_synthetic(stack.bootstrap, log, records=records[500:], catalog=False)
        wait_for(lambda: events_committed(store) == 900, 240, "the Flink job to commit all 900 events")
        assert store.require_current_version() == backfilled
    finally:
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=120)
    assert job.returncode == 0, output
    assert running_jobs(local_flink) == []
    assert stack.redis().get(layout.STREAM_LOCK) is None
    followed = list(store.dump(backfilled))
    rebuilt, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert followed == list(store.dump(rebuilt))
