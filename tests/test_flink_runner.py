"""The feature pipeline through Beam's FlinkRunner: the client path always, a real cluster when a jar is here."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from transforms.jobs import RunnerSettings, backfill

JAR_NAME = "beam-runners-flink-1.19-job-server-2.61.0.jar"


def job_server_jar() -> str | None:
    """A Flink job-server jar given by env, or one Beam cached earlier (Maven Central is unreachable here)."""
    candidates = [os.environ.get("KAPPAREC_FLINK_JOB_SERVER_JAR", "")]
    candidates += glob.glob(str(Path.home() / ".apache_beam" / "cache" / "jars" / JAR_NAME))
    return next((c for c in candidates if c and Path(c).is_file()), None)


def backfill_dump(stack, runner: RunnerSettings) -> list[str]:
    version, _ = backfill(stack.bootstrap, stack.redis_url, runner=runner, progress=False)
    return list(RedisFeatureStore(stack.redis_url).dump(version))


def test_flink_runner_client_path_matches_the_direct_runner(stack):
    """FlinkRunner's portable client (pipeline proto, job service, LOOPBACK workers) with an embedded job server."""
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=25, events=300, seed=4))
    direct = backfill_dump(stack, RunnerSettings())
    flink_client = backfill_dump(
        stack, RunnerSettings("FlinkRunner", pipeline_args=("--job_endpoint=embed", "--environment_type=LOOPBACK"))
    )
    assert len(direct) > 50
    assert flink_client == direct


@pytest.mark.slow
@pytest.mark.flink
def test_backfill_on_a_real_flink_cluster_matches_the_direct_runner(stack, tmp_path):
    jar = job_server_jar()
    if jar is None:
        pytest.skip(f"no Flink job-server jar ({JAR_NAME}): set KAPPAREC_FLINK_JOB_SERVER_JAR or put it in "
                    "~/.apache_beam/cache/jars; Maven Central is unreachable from this machine")
    from infra.flink import FlinkCluster
    from infra.services import free_port

    flink_port = free_port()
    cluster = FlinkCluster(tmp_path, flink_port)
    cluster.start()
    try:
        produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=25, events=300, seed=4))
        direct = backfill_dump(stack, RunnerSettings())
        on_flink = backfill_dump(stack, RunnerSettings(
            "FlinkRunner", f"localhost:{flink_port}", ("--environment_type=LOOPBACK",), jar))
        assert on_flink == direct
    finally:
        cluster.stop()
