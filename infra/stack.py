"""The local stack as one unit: bring it up, report on it, take it down.

The ports a stack was started with are recorded in ``<run_dir>/stack.json``, so
``status`` and ``down`` find a stack started on non-default ports without being told
again, and ``up`` refuses to silently keep a running stack on other ports than asked.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.apps import DemoApps
from infra.flink import FLINK_VERSION, FlinkCluster
from infra.health import broker_healthy, redis_healthy
from infra.kafka_broker import KafkaNode, broker_spec, kafka_version
from infra.services import REDIS_AOF_DIR, ManagedService, redis_spec
from kapparec.errors import KapparecError


@dataclass(frozen=True)
class StackPorts:
    broker: int
    redis: int
    flink: int


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    healthy: bool
    expected: bool  # part of the stack that was brought up, so it must be healthy
    kind: str  # what runs there, e.g. "Apache Kafka 4.1.1 (KRaft)"

    @property
    def state(self) -> str:
        if self.healthy:
            return "healthy"
        if self.pid is not None:
            return "unhealthy"
        return "down" if self.expected else "off"

    def as_dict(self) -> dict:
        return {**asdict(self), "state": self.state}


class LocalStack:
    def __init__(self, run_dir: Path, ports: StackPorts):
        self.run_dir = run_dir
        self.ports = ports
        self.record_file = run_dir / "stack.json"
        self.broker = ManagedService(broker_spec(ports.broker, run_dir), run_dir)
        self.redis = ManagedService(redis_spec(ports.redis, run_dir), run_dir)
        self.flink = FlinkCluster(run_dir, ports.flink)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.broker}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    # -- the record of what was brought up ------------------------------------------------

    @staticmethod
    def recorded(run_dir: Path) -> dict | None:
        """``{"ports": {...}, "flink": bool}`` of the stack last brought up here, if any."""
        try:
            return json.loads((run_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return None

    def _record(self, with_flink: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.record_file.write_text(json.dumps({"ports": asdict(self.ports), "flink": with_flink}) + "\n")

    def flink_expected(self) -> bool:
        return bool((self.recorded(self.run_dir) or {}).get("flink"))

    # -- verbs ---------------------------------------------------------------------------

    def up(self, with_flink: bool = False) -> list[str]:
        """Start what is not running and wait until each service answers; returns the names started."""
        self._refuse_other_ports()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with_flink = with_flink or self.flink_expected()
        self._record(with_flink)
        started = [service.spec.name for service in (self.broker, self.redis) if service.start()]
        if with_flink and self.flink.start():
            started.append("flink")
        return started

    def down(self) -> list[str]:
        """Stop every service of this stack, verifying none is left; returns the names that were running.

        The demo's stream job, server and console go first: they run on this stack and would only
        retry against it."""
        stopped = DemoApps(self.run_dir).stop()
        stopped += [name for name, stop in (("flink", self.flink.stop), ("redis", self.redis.stop), ("broker", self.broker.stop)) if stop()]
        self.record_file.unlink(missing_ok=True)
        return stopped

    def wipe(self) -> list[str]:
        """Delete the broker's log and Redis's append-only file: every record and every feature.

        Both at once, because a store that outlived its log would hold features and committed
        offsets for records that no longer exist. Refused while either service runs."""
        if self.broker.running() or self.redis.running():
            raise KapparecError("the stack is running: stop it first with `kapparec infra down`")
        wiped = ["log"] if KafkaNode(self.run_dir, self.ports.broker).wipe() else []
        aof = self.run_dir / REDIS_AOF_DIR
        if aof.exists():
            shutil.rmtree(aof)
            wiped.append("features")
        return wiped

    def status(self) -> list[ServiceStatus]:
        """One entry per service; only a process of ours that answers its protocol counts as healthy."""
        broker_pid, redis_pid, flink_pids = self.broker.recorded_pid(), self.redis.recorded_pid(), self.flink.java_pids()
        return [
            ServiceStatus("broker", self.ports.broker, broker_pid, bool(broker_pid) and broker_healthy(self.bootstrap), True,
                          f"Apache Kafka {kafka_version()} (KRaft)"),
            ServiceStatus("redis", self.ports.redis, redis_pid, bool(redis_pid) and redis_healthy(self.redis_url), True,
                          "Redis (append-only file)"),
            ServiceStatus(
                "flink",
                self.ports.flink,
                min(flink_pids, default=None),
                bool(flink_pids) and self.flink.healthy(),
                self.flink_expected(),
                f"Apache Flink {FLINK_VERSION}",
            ),
        ]

    def _refuse_other_ports(self) -> None:
        record = self.recorded(self.run_dir)
        if record is None or not (self.broker.running() or self.redis.running() or self.flink.running()):
            return
        if record["ports"] != asdict(self.ports):
            raise KapparecError(
                f"the stack in {self.run_dir} is running on ports {record['ports']}; "
                f"run `kapparec infra down` before changing ports"
            )
