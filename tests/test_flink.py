"""The Flink cluster's own configuration, and how the command restarts a continuous job on it (the budget of
resubmissions after a failure, the job lifetime); starting a real cluster is in test_infra (marker slow)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import yaml

from featurestore.redis_store import RedisFeatureStore
from infra.flink import FLINK_VERSION, FlinkCluster, merge
from transforms.config import FeatureConfig
from transforms.job_control import FlinkJobFailed, RestartBudget
from transforms.jobs import VersionStop

# The shape of the config.yaml shipped in the apache-flink 1.19.3 wheel (Flink's new nested format).
SHIPPED_CONFIG = """
jobmanager:
  bind-host: localhost
  rpc: {address: localhost, port: 6123}
  memory: {process: {size: 1600m}}
taskmanager:
  numberOfTaskSlots: 1
  memory: {process: {size: 1728m}}
parallelism: {default: 1}
rest: {address: localhost, bind-address: localhost}
"""


def shipped_install(run_dir: Path) -> None:
    conf = run_dir / f"flink-{FLINK_VERSION}" / "pyflink" / "conf"
    conf.mkdir(parents=True)
    (conf / "config.yaml").write_text(SHIPPED_CONFIG)
    (conf / "log4j.properties").write_text("rootLogger.level = INFO\n")
    (conf / "masters").write_text("localhost:8081\n")


def test_merge_overrides_leaves_and_keeps_sibling_keys():
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 9}}) == {"a": {"b": 9, "c": 2}, "d": 3}


def test_conf_dir_carries_our_ports_slots_and_memory_and_keeps_the_rest(tmp_path: Path):
    shipped_install(tmp_path)
    cluster = FlinkCluster(tmp_path, port=18081)

    cluster.write_conf(rpc_port=16123)

    config = yaml.safe_load((cluster.conf_dir / "config.yaml").read_text())
    assert config["rest"] == {"address": "localhost", "bind-address": "localhost", "port": 18081}
    assert config["jobmanager"]["rpc"] == {"address": "localhost", "port": 16123}
    assert config["taskmanager"]["numberOfTaskSlots"] == 4
    assert config["taskmanager"]["memory"]["process"]["size"] == "1280m"
    assert config["taskmanager"]["memory"]["managed"]["fraction"] == 0.1
    assert config["jobmanager"]["memory"]["process"]["size"] == "1024m"
    assert config["heartbeat"] == {"interval": 2000}
    assert config["parallelism"] == {"default": 1}
    assert (cluster.conf_dir / "log4j.properties").read_text() == "rootLogger.level = INFO\n"
    assert (cluster.conf_dir / "masters").read_text() == "localhost:18081\n"


def test_scripts_see_our_conf_log_and_pid_dirs_and_a_jdk(tmp_path: Path):
    env = FlinkCluster(tmp_path, port=18081).script_env()

    assert env["FLINK_CONF_DIR"] == str(tmp_path / "flink-conf")
    assert env["FLINK_LOG_DIR"] == str(tmp_path / "logs" / "flink")
    assert env["FLINK_PID_DIR"] == str(tmp_path / "flink-pids")
    assert (Path(env["JAVA_HOME"]) / "bin" / "java").exists()


def test_nothing_is_running_or_installed_in_a_fresh_run_dir(tmp_path: Path):
    cluster = FlinkCluster(tmp_path, port=18081)

    assert not cluster.installed()
    assert not cluster.running()
    assert cluster.stop() is False


def test_a_failed_flink_job_is_resubmitted_until_its_failures_exceed_the_budget_in_the_window():
    budget = RestartBudget(max_failures=2, window_s=60.0, delay_s=0.0)
    failure = FlinkJobFailed("Flink job kapparec-stream-x failed: TaskManager lost")

    assert [budget.allows(failure) for _ in range(3)] == [True, True, False]
    assert not RestartBudget(max_failures=0, delay_s=0.0).allows(failure)


def test_failures_older_than_the_window_leave_the_budget():
    budget = RestartBudget(max_failures=1, window_s=0.2, delay_s=0.0)
    failure = FlinkJobFailed("Flink job kapparec-stream-x failed")

    assert budget.allows(failure)
    time.sleep(0.3)
    assert budget.allows(failure)


def test_a_followed_read_ends_once_its_job_lifetime_has_passed(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("stream", FeatureConfig().pinned())
    store.publish(version)

    short = pickle.loads(pickle.dumps(VersionStop(stack.redis_url, version, "kr:test:stop", lifetime_s=0.3)))
    long = VersionStop(stack.redis_url, version, "kr:test:stop", lifetime_s=60)

    assert not short.should_stop() and not long.should_stop()  # the lifetime starts at the first check
    time.sleep(0.4)
    assert short.should_stop() and not long.should_stop()
    assert not VersionStop(stack.redis_url, version, "kr:test:stop").should_stop()
