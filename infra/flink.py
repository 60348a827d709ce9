"""An opt-in Flink 1.19 standalone cluster under the run directory: one JobManager, one TaskManager,
the Beam SDK worker pool beside it, and Beam's Flink job-server jar (``infra.jobserver``).

Flink comes from the ``apache-flink`` wheels, installed on first use into
``<run_dir>/flink-1.19.3`` rather than the project venv: the wheels are large and pin
their own Python dependencies, which we do not want beside Beam's. Every path the
cluster writes (config, pids, logs) lives under the run directory, so a test cluster
and a developer's cluster never touch each other.

The Python SDK workers run in an EXTERNAL worker pool (``worker_pool_main``), one per
TaskManager host, which starts one worker process per SDK worker the TaskManager asks for.
LOOPBACK would run them as threads of the submitting process under one GIL; Docker, Beam's
default, is not here. ``flink-endpoints.json`` records what a job needs to reach this cluster
without flags (``local_endpoints``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.health import flink_healthy, wait_until
from infra.jobserver import ensure_jar
from infra.services import ManagedService, ServiceSpec, free_port, live_pids, pid_alive, port_open
from kapparec.errors import KapparecError

FLINK_VERSION = "1.19.3"
FLINK_PACKAGES = (f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}")

# Each Flink script first runs a small JVM to parse config.yaml; on a busy 2-core box
# that alone takes seconds, and stop waits up to 10 s per daemon.
SCRIPT_TIMEOUT_S = 120.0
ENDPOINTS_FILE = "flink-endpoints.json"
TASKMANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"

# Sized for a 2-core box shared with Redis, the broker and the Python SDK workers (which live
# outside these JVMs): heaps of a few hundred MB. Four slots hold a continuous job and a
# backfill side by side, each at parallelism 2. A Beam job keeps its state on the heap and
# uses no managed memory (that is RocksDB's), so managed memory gets a tenth, not Flink's 40%.
#
# A heartbeat every 2 s (Flink: 10 s): a TaskManager that died is taken as lost after two
# heartbeats it refused, so its jobs fail, and are resubmitted, within seconds. The timeout for
# one that hangs stays Flink's 50 s, which a loaded 2-core box needs.
CLUSTER_SETTINGS = {
    "heartbeat": {"interval": 2000},
    "jobmanager": {"memory": {"process": {"size": "1024m"}}},
    "taskmanager": {"numberOfTaskSlots": 4,
                    "memory": {"process": {"size": "1280m"}, "managed": {"fraction": 0.1}}},
}


def java_home() -> Path:
    """The JDK behind ``/usr/bin/java`` (OpenJDK 17 here): ``.../bin/java`` -> ``...``."""
    java = shutil.which("java")
    if java is None:
        raise KapparecError("java is not installed (Flink needs OpenJDK 17)")
    return Path(os.path.realpath(java)).parent.parent


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key, recursing into nested sections."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class FlinkCluster:
    """Install, configure, start, probe and stop the local cluster; every step idempotent."""

    def __init__(self, run_dir: Path, port: int):
        self.run_dir = run_dir
        self.port = port
        self.install_dir = run_dir / f"flink-{FLINK_VERSION}"
        self.home = self.install_dir / "pyflink"
        self.conf_dir = run_dir / "flink-conf"
        self.pid_dir = run_dir / "flink-pids"
        self.log_dir = run_dir / "logs" / "flink"
        self.endpoints_file = run_dir / ENDPOINTS_FILE

    # -- install -------------------------------------------------------------------------

    def installed(self) -> bool:
        return (self.home / "bin" / "start-cluster.sh").exists()

    def install(self) -> bool:
        """Install the Flink wheels unless present; True when this call installed them."""
        if self.installed():
            return False
        # pip writes into a scratch dir renamed at the end, so an interrupted install is never mistaken for a whole one.
        partial = self.install_dir.with_name(self.install_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "install.log", "ab") as log:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(partial), *FLINK_PACKAGES],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if result.returncode != 0:
            raise KapparecError(f"installing Flink {FLINK_VERSION} failed; see {self.log_dir / 'install.log'}")
        partial.rename(self.install_dir)
        return True

    # -- configure -----------------------------------------------------------------------

    def write_conf(self, rpc_port: int) -> None:
        """Our conf dir: the wheel's conf with our ports, slots and memory sizes (Flink 1.19 ``config.yaml``)."""
        import yaml  # only needed when starting Flink; keeps `infra status` light

        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.copytree(self.home / "conf", self.conf_dir)
        config_file = self.conf_dir / "config.yaml"
        shipped = yaml.safe_load(config_file.read_text()) or {}
        ours = merge(CLUSTER_SETTINGS, {
            "jobmanager": {"bind-host": "localhost", "rpc": {"address": "localhost", "port": rpc_port}},
            "taskmanager": {"bind-host": "localhost", "host": "localhost"},
            "rest": {"port": self.port, "address": "localhost", "bind-address": "localhost"},
        })
        config_file.write_text(yaml.safe_dump(merge(shipped, ours), sort_keys=False))
        (self.conf_dir / "masters").write_text(f"localhost:{self.port}\n")
        (self.conf_dir / "workers").write_text("localhost\n")

    def script_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JAVA_HOME": str(java_home()),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
        }

    # -- run -----------------------------------------------------------------------------

    def java_pids(self) -> list[int]:
        """Live JVMs started with our conf dir: the JobManager and the TaskManager."""
        conf = str(self.conf_dir)
        return live_pids(lambda _pid, _stat, argv: Path(argv[0]).name == "java" and conf in argv)

    def taskmanager_pids(self) -> list[int]:
        return live_pids(lambda _pid, _stat, argv: Path(argv[0]).name == "java" and str(self.conf_dir) in argv
                         and TASKMANAGER_MAIN in argv)

    def start_taskmanager(self) -> None:
        """Another TaskManager for the running cluster: a standalone cluster does not replace a lost one."""
        if not self._script("taskmanager.sh", SCRIPT_TIMEOUT_S, "start"):
            raise KapparecError(f"flink taskmanager.sh start failed; see {self.log_dir / 'cluster-scripts.log'}")

    def worker_pool(self) -> ManagedService:
        """The SDK worker pool beside the TaskManager, on the port recorded at start (0 before)."""
        return ManagedService(worker_pool_spec(self.recorded().get("worker_pool_port", 0)), self.run_dir)

    def recorded(self) -> dict:
        """``{"rest_port", "worker_pool_port", "job_server_jar"}`` of the running cluster; empty when none."""
        try:
            return json.loads(self.endpoints_file.read_text())
        except (OSError, ValueError):
            return {}

    def running(self) -> bool:
        return bool(self.java_pids()) or self.worker_pool().running()

    def healthy(self) -> bool:
        return flink_healthy(self.port) and self.worker_pool().running()

    def start(self, ready_timeout: float = 180.0) -> bool:
        """Install if needed and start unless running; True when this call started it."""
        if self.running():
            return False
        if port_open(self.port):
            raise KapparecError(
                f"port {self.port} for flink is held by another process, not ours (free it or choose another port)"
            )
        jar = ensure_jar()
        self.install()
        self.write_conf(rpc_port=free_port())
        self.endpoints_file.write_text(json.dumps(
            {"rest_port": self.port, "worker_pool_port": free_port(), "job_server_jar": str(jar)}) + "\n")
        try:
            self.worker_pool().start()
            if not self._script("start-cluster.sh", SCRIPT_TIMEOUT_S):
                raise KapparecError(f"flink start-cluster.sh failed; see {self.log_dir / 'cluster-scripts.log'}")
            wait_until(
                lambda: flink_healthy(self.port),
                ready_timeout,
                f"flink did not report a TaskManager on http://localhost:{self.port}/overview "
                f"within {ready_timeout:.0f}s; see {self.log_dir}",
                interval_s=0.5,
            )
        except KapparecError:
            self.stop()
            raise
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop both daemons and the worker pool, then make sure no process of ours is left; True when
        something was running."""
        if not self.running():
            return False
        if self.home.exists() and self.java_pids():
            # A failed or stuck script is not fatal: the signals below finish the job.
            self._script("stop-cluster.sh", SCRIPT_TIMEOUT_S)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            leftovers = self.java_pids()
            for pid in leftovers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(pid_alive(pid) for pid in leftovers):
                time.sleep(0.1)
        if self.java_pids():
            raise KapparecError(f"flink JVMs survived SIGKILL: {self.java_pids()}")
        self.worker_pool().stop()  # its group: the pool and every SDK worker it started
        self.endpoints_file.unlink(missing_ok=True)
        return True

    def _script(self, name: str, timeout: float, *args: str) -> bool:
        """Run one of Flink's cluster scripts; False when it failed or overran ``timeout``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "cluster-scripts.log", "ab") as log:
            script = subprocess.Popen(
                ["bash", str(self.home / "bin" / name), *args],
                env=self.script_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the daemons must outlive the CLI and ignore its terminal
            )
        try:
            return script.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            # The script's group holds its shells (and, for start, the daemons it launched): none may linger.
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
            return False


def worker_pool_spec(port: int) -> ServiceSpec:
    """Beam's worker pool, started from this venv.

    The pool starts each SDK worker as ``python -c ...`` found on PATH, so PATH leads with this
    venv's ``bin``: the workers import this very package and Beam. ``env`` execs the pool in its
    place, so the recorded pid is the pool's and its group holds the workers.
    """
    venv_bin = str(Path(sys.executable).parent)
    return ServiceSpec("beam-worker-pool", port, lambda: (
        "env", f"PATH={venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}",
    ), lambda: grpc_answers(f"localhost:{port}"))


def grpc_answers(address: str, timeout_s: float = 1.0) -> bool:
    """A gRPC server completes the HTTP/2 handshake at ``address``."""
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def local_endpoints(run_dir: Path) -> dict | None:
    """What the running local cluster in ``run_dir`` recorded at start; None when none runs there."""
    cluster = FlinkCluster(run_dir, port=0)
    recorded = cluster.recorded()
    return recorded if recorded and cluster.java_pids() else None
