"""``kapparec infra up | down | status`` end to end: real processes on free ports in a tmp run dir.

Each test drives the installed console script in a subprocess, exactly as a user would,
with its own run dir and ports so it never touches a developer's running stack.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from infra.health import flink_overview
from infra.kafka_broker import cluster_id, kafka_version
from streams.offsets import offset_ranges
from infra.services import free_port, group_pids, live_pids, pid_alive, port_open
from streams.topics import ALL_TOPICS

KAPPAREC = Path(sys.executable).with_name("kapparec")


class InfraCli:
    """The ``kapparec infra`` verbs bound to one isolated run dir and set of ports."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.broker_port, self.redis_port, self.flink_port = free_port(), free_port(), free_port()
        self.env = {
            key: value for key, value in os.environ.items() if key not in ("KAPPAREC_BOOTSTRAP", "KAPPAREC_REDIS_URL")
        } | {
            "KAPPAREC_RUN_DIR": str(run_dir),
            "KAPPAREC_BROKER_PORT": str(self.broker_port),
            "KAPPAREC_REDIS_PORT": str(self.redis_port),
            "KAPPAREC_FLINK_PORT": str(self.flink_port),
        }

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(KAPPAREC), "infra", *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def status(self) -> tuple[int, dict[str, dict]]:
        result = self("status", "--json")
        return result.returncode, {service["name"]: service for service in json.loads(result.stdout)}


@pytest.fixture
def infra(tmp_path: Path):
    cli = InfraCli(tmp_path / "run")
    yield cli
    cli("down", timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, fragment: str) -> None:
    assert result.returncode == exit_code, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr


def test_up_brings_broker_and_redis_up_healthy_with_topics(infra: InfraCli):
    result = infra("up")
    assert result.returncode == 0, result.stderr
    assert "started: broker, redis" in result.stdout

    code, services = infra.status()
    assert code == 0
    assert services["broker"]["state"] == "healthy" and services["broker"]["port"] == infra.broker_port
    assert services["redis"]["state"] == "healthy" and services["redis"]["port"] == infra.redis_port
    assert services["flink"]["state"] == "off"

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{infra.broker_port}")
    try:
        assert set(ALL_TOPICS) <= set(admin.list_topics())
    finally:
        admin.close()


def test_status_names_apache_kafka_and_its_version(infra: InfraCli):
    assert infra("up").returncode == 0

    plain = infra("status")

    broker_line = plain.stdout.splitlines()[0]
    assert broker_line.startswith("broker") and f"Apache Kafka {kafka_version()} (KRaft)" in broker_line
    assert broker_line.endswith("healthy")


def kapparec(infra: InfraCli, *args: str) -> subprocess.CompletedProcess:
    """A kapparec verb against this stack's ports, as a user on the same run dir would run it."""
    result = subprocess.run([str(KAPPAREC), *args], env=infra.env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_the_log_and_the_features_survive_down_and_up_and_a_replay_reproduces_the_dump(infra: InfraCli):
    assert infra("up").returncode == 0
    kapparec(infra, "produce", "synthetic", "--users", "30", "--items", "40", "--events", "600", "--seed", "3")
    kapparec(infra, "backfill")
    before = kapparec(infra, "features", "dump").stdout
    assert before.count("\n") > 50

    assert infra("down").returncode == 0
    assert infra("up").returncode == 0

    assert kapparec(infra, "features", "dump").stdout == before  # Redis's append-only file kept the store
    kapparec(infra, "backfill")  # and the log kept every record: a replay makes the same features
    assert kapparec(infra, "features", "dump").stdout == before


def test_wipe_is_refused_while_up_and_then_empties_the_log_and_the_store(infra: InfraCli):
    assert infra("up").returncode == 0
    kapparec(infra, "produce", "synthetic", "--users", "5", "--items", "5", "--events", "50", "--seed", "1")
    kapparec(infra, "backfill")

    assert_one_line_error(infra("wipe"), 1, "stop it first with `kapparec infra down`")
    assert infra("down").returncode == 0
    wiped = infra("wipe")
    assert wiped.returncode == 0 and "wiped: log and features" in wiped.stdout
    assert infra("up").returncode == 0

    bootstrap = f"127.0.0.1:{infra.broker_port}"
    assert {p: stop for p, (_, stop) in offset_ranges(bootstrap, "events").items()} == {p: 0 for p in range(4)}
    empty = subprocess.run([str(KAPPAREC), "features", "dump"], env=infra.env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
    assert empty.returncode == 1 and "the feature store is empty" in empty.stderr


def test_up_twice_keeps_the_same_processes(infra: InfraCli):
    assert infra("up").returncode == 0
    _, before = infra.status()

    again = infra("up")

    assert again.returncode == 0, again.stderr
    assert "nothing (already up)" in again.stdout
    _, after = infra.status()
    assert [after[name]["pid"] for name in ("broker", "redis")] == [before[name]["pid"] for name in ("broker", "redis")]


def test_up_on_a_port_held_by_a_foreign_listener_fails_in_one_line(infra: InfraCli):
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", infra.broker_port))
        foreign.listen()

        result = infra("up")

    assert_one_line_error(result, 1, f"port {infra.broker_port} for broker is held by another process")


def test_up_refuses_to_change_ports_of_a_running_stack(infra: InfraCli):
    assert infra("up").returncode == 0

    result = infra("up", "--redis-port", str(free_port()))

    assert_one_line_error(result, 1, "run `kapparec infra down` before changing ports")


def test_down_leaves_no_process_and_status_then_reports_down(infra: InfraCli):
    assert infra("up").returncode == 0
    _, services = infra.status()
    pids = [services[name]["pid"] for name in ("broker", "redis")]

    result = infra("down")

    assert result.returncode == 0, result.stderr
    assert "stopped: redis, broker" in result.stdout
    assert not any(pid_alive(pid) or group_pids(pid) for pid in pids)
    again = infra("down")
    assert again.returncode == 0 and "nothing (already down)" in again.stdout

    code, services = infra.status()
    assert code == 1
    assert services["broker"]["state"] == "down" and services["redis"]["state"] == "down"
    plain = infra("status")
    assert plain.returncode == 1
    assert [line.split()[-1] for line in plain.stdout.splitlines()] == ["down", "down", "off"]


def test_status_finds_a_stack_started_on_flag_ports_without_the_flags(infra: InfraCli):
    broker_port = free_port()
    assert infra("up", "--broker-port", str(broker_port)).returncode == 0

    code, services = infra.status()

    assert code == 0
    assert services["broker"]["port"] == broker_port and services["broker"]["state"] == "healthy"


@pytest.mark.slow
def test_flink_cluster_comes_up_with_a_taskmanager_and_goes_down_completely(infra: InfraCli):
    result = infra("up", "--with-flink", timeout=600)
    assert result.returncode == 0, result.stderr

    overview = flink_overview(infra.flink_port)
    assert overview is not None and overview["taskmanagers"] >= 1
    code, services = infra.status()
    assert code == 0 and services["flink"]["state"] == "healthy"
    pool_port = json.loads((infra.run_dir / "flink-endpoints.json").read_text())["worker_pool_port"]
    assert port_open(pool_port)

    down = infra("down", timeout=300)

    assert down.returncode == 0, down.stderr
    assert "flink" in down.stdout
    conf_dir = str(infra.run_dir / "flink-conf")
    assert live_pids(lambda _pid, _stat, argv: conf_dir in argv) == []
    assert flink_overview(infra.flink_port) is None
    assert not port_open(pool_port)
    assert live_pids(lambda _pid, _stat, argv: "apache_beam.runners.worker.worker_pool_main" in argv
                     and f"--service_port={pool_port}" in argv) == []


def test_a_cluster_id_is_never_read_as_an_option():
    """One id in 64 would start with "-" if drawn naively; the storage tool then formats nothing."""
    ids = [cluster_id() for _ in range(5_000)]
    assert not [made for made in ids if made.startswith("-")]
    assert {len(base64.urlsafe_b64decode(made + "==")) for made in ids} == {16}
