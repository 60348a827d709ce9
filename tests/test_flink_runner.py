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


@pytest.mark.flink
def test_backfill_on_flink_writes_the_golden_dump_and_finishes(stack, local_flink):
    """The smoke test of the Flink runner, in the default suite: about a minute with the cluster's start."""
    log = produce_golden_log(stack.bootstrap)
    before = job_states(local_flink)

    backfill(stack.bootstrap, stack.redis_url, runner=RunnerSettings("FlinkRunner"), progress=False)

    assert_store_matches_golden(stack, log)
    ran = {jid: state for jid, state in job_states(local_flink).items() if jid not in before}
    assert list(ran.values()) == ["FINISHED"]


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
