"""The feature pipeline through Beam's FlinkRunner: on an embedded job service, and on a real Flink cluster.

The cluster is started the way ``kapparec infra up --with-flink`` starts it (the job-server jar
resolved with mvn, the EXTERNAL worker pool beside the TaskManager). When the jar cannot be
resolved or the cluster does not come up, these tests fail: a skipped smoke test proves nothing.
"""

from __future__ import annotations

import pytest

from featurestore.redis_store import RedisFeatureStore
from infra.flink import FlinkCluster
from infra.health import flink_jobs
from infra.services import free_port
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from tests.test_golden import assert_store_matches_golden, produce_golden_log
from transforms.jobs import RunnerSettings, backfill


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


@pytest.mark.flink
def test_backfill_on_flink_writes_the_golden_dump_and_finishes(stack, local_flink):
    log = produce_golden_log(stack.bootstrap)
    before = job_states(local_flink)

    backfill(stack.bootstrap, stack.redis_url, runner=RunnerSettings("FlinkRunner"), progress=False)

    assert_store_matches_golden(stack, log)
    ran = {jid: state for jid, state in job_states(local_flink).items() if jid not in before}
    assert list(ran.values()) == ["FINISHED"]
