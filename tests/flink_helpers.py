"""The local Flink cluster the Flink tests run on, and what they read of its REST API.

The cluster is started the way ``kapparec infra up --with-flink`` starts it (the job-server jar
resolved with mvn, the EXTERNAL worker pool beside the TaskManager). When the jar cannot be
resolved or the cluster does not come up, a test that uses it fails: a skipped test proves nothing.
"""

from __future__ import annotations

import pytest

from infra.flink import FlinkCluster
from infra.health import flink_jobs
from infra.services import free_port


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


def running_jobs(master: str) -> list[str]:
    return [jid for jid, state in job_states(master).items() if state == "RUNNING"]
