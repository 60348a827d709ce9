"""The local stack's broker: a single-node Apache Kafka in KRaft mode, its log on local disk.

One process is both broker and controller (``process.roles=broker,controller``), as Kafka
4 runs without ZooKeeper. The log lives under ``<run_dir>/kafka/data`` and survives a stop:
in a Kappa system the log is the database, so only ``kapparec infra wipe`` deletes it.
The jars come from Maven Central (``infra/kafka/pom.xml``), resolved once into a cache
directory by ``make install``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from infra.health import broker_healthy
from infra.maven import copy_dependencies, resolved
from infra.services import ServiceSpec, free_port
from kapparec import settings
from kapparec.errors import KapparecError

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG_CONFIG = KAFKA_DIR / "log4j2.properties"
NODE_ID = 1
FORMAT_TIMEOUT_S = 120

# A 2-core machine: a small heap (the broker serves reads from the page cache, not the heap),
# G1 with short pauses as Kafka's own start script sets it, and a JVM that exits on OOM
# rather than limping on.
JVM_OPTIONS = (
    "-Xms256m", "-Xmx1g",
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Thread pools sized for 2 cores (the defaults assume a server: 8 I/O threads, 3 network threads).
# Topics come from `ensure_topics` alone, with the settings a replay needs, so no client
# creates one by asking for it. Internal topics have one replica: there is one node.
BROKER_SETTINGS = {
    "auto.create.topics.enable": "false",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "log.cleaner.threads": "1",
    "num.recovery.threads.per.data.dir": "2",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}


def kafka_version() -> str:
    """The broker version pinned in the pom: the one place it is written."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ElementTree.parse(POM).find("m:properties/m:kafka.version", namespace)
    if version is None or not version.text:
        raise KapparecError(f"{POM} pins no kafka.version")
    return version.text.strip()


def jars_dir() -> Path:
    return settings.cache_dir() / f"kafka-{kafka_version()}"


def ensure_jars() -> bool:
    """Resolve the broker's jars into the cache unless they are there; True when this call did."""
    return copy_dependencies(POM, jars_dir())


def java_command() -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise KapparecError("java is not installed: run `make install` (the Kafka broker needs Java 17)")
    if not resolved(jars_dir()):
        raise KapparecError(f"the Kafka {kafka_version()} jars are not in {jars_dir()}: run `make install`")
    return [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG_CONFIG}", "-cp", f"{jars_dir()}/*"]


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, as Kafka's own tool makes.

    Like Kafka's ``Uuid.randomUuid``, never one that starts with "-": the storage tool would read it
    as an option and format nothing (about one start in 64)."""
    while (made := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return made


class KafkaNode:
    """The files of one local node: its properties and its log directory under ``<run_dir>/kafka``."""

    def __init__(self, run_dir: Path, port: int):
        self.port = port
        self.home = run_dir / "kafka"
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def launch(self) -> list[str]:
        """Write this start's properties, format the storage on the first start, return the command.

        The controller listener takes a free port at every start: nothing outside the node
        dials it, and a fixed one could clash with another stack on this machine.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        controller = free_port()
        while controller == self.port:  # the broker's port is chosen free but not yet bound
            controller = free_port()
        listeners = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
        }
        lines = [f"{key}={value}" for key, value in {**listeners, **BROKER_SETTINGS}.items()]
        self.properties.write_text("\n".join(lines) + "\n")
        if not self.formatted():
            self._format()
        return [*java_command(), "kafka.Kafka", str(self.properties)]

    def _format(self) -> None:
        command = [*java_command(), "kafka.tools.StorageTool", "format",
                   "--cluster-id", cluster_id(), "--config", str(self.properties)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S)
        if result.returncode != 0:
            # The tool logs its start-up at INFO first; the reason is its last line.
            lines = (result.stdout + result.stderr).strip().splitlines() or ["no output"]
            raise KapparecError(f"formatting the Kafka log in {self.data_dir} failed: {lines[-1]}")

    def wipe(self) -> bool:
        """Delete the log (every topic and record); True when there was one."""
        existed = self.home.exists()
        shutil.rmtree(self.home, ignore_errors=True)
        return existed


def broker_spec(port: int, run_dir: Path) -> ServiceSpec:
    # A JVM start (and the first start's format) takes seconds on 2 busy cores; a clean
    # shutdown flushes and closes every log, which saves a recovery at the next start.
    return ServiceSpec("broker", port, KafkaNode(run_dir, port).launch, lambda: broker_healthy(f"127.0.0.1:{port}"),
                       ready_timeout_s=90.0, stop_timeout_s=30.0)


if __name__ == "__main__":
    # `make install`: resolve the jars once, so no later command needs the network.
    print(f"Kafka {kafka_version()} jars {'resolved into' if ensure_jars() else 'already in'} {jars_dir()}")
