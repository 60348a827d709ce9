"""The processes ``kapparec demo`` leaves running beside the stack: the stream job, the gRPC server
and the web console.

Each is a ``ManagedService`` (a pid file and a log under the run directory, its own process
group), so ``kapparec infra down`` finds and stops them as it stops the broker and Redis, and a
second demo finds them running and reuses them. Their ports are recorded in ``apps.json`` beside
the pid files, so a second demo talks to the server the first one started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.services import ManagedService, ServiceSpec, free_port, port_open
from kapparec.errors import KapparecError

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
# Readers before the writer, all before the stack: a server outliving its Redis only retries.
STOP_ORDER = ("console", "serve", "stream")
DEFAULT_SERVE_PORT, DEFAULT_METRICS_PORT, DEFAULT_CONSOLE_PORT = 50051, 9464, 8765
SERVE_READY_S = 300.0  # loading TensorFlow and the model on a busy 2-core machine


@dataclass(frozen=True)
class AppPorts:
    serve: int
    metrics: int
    console: int

    @property
    def server(self) -> str:
        return f"localhost:{self.serve}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console}/"

    @property
    def metrics_url(self) -> str:
        return f"http://localhost:{self.metrics}/metrics"


@dataclass(frozen=True)
class AppSettings:
    """What the demo's processes are started with: the stack's endpoints and the demo's files."""

    bootstrap: str
    redis_url: str
    models_dir: Path
    experiments_file: Path


class JobService(ManagedService):
    """A process that listens on no port (the stream job): started is all ``start`` waits for;
    what it does (``stream_following``) is for the caller to wait on, with the pid to watch."""

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        return None


class DemoApps:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.record_file = run_dir / "apps.json"

    def recorded_ports(self) -> AppPorts | None:
        try:
            return AppPorts(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def ports(self) -> AppPorts:
        """The running apps' ports, else the defaults where free, else free ones."""
        if self.running() and (recorded := self.recorded_ports()):
            return recorded
        return AppPorts(*(default if not port_open(default) else free_port()
                          for default in (DEFAULT_SERVE_PORT, DEFAULT_METRICS_PORT, DEFAULT_CONSOLE_PORT)))

    def pid(self, name: str) -> int | None:
        return self._pid_only(name).recorded_pid()

    def running(self) -> list[str]:
        return [name for name in STOP_ORDER if self._pid_only(name).running()]

    def start(self, settings: AppSettings, ports: AppPorts, name: str) -> bool:
        """Start one app unless it runs; True when this call started it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.record_file.write_text(json.dumps(asdict(ports)) + "\n")
        service_class, spec = {"stream": (JobService, _stream_spec), "serve": (ManagedService, _serve_spec),
                               "console": (ManagedService, _console_spec)}[name]
        return service_class(spec(settings, ports), self.run_dir).start()

    def stop(self) -> list[str]:
        """Stop every app of this run directory; the names that were running."""
        stopped = [name for name in STOP_ORDER if self._pid_only(name).stop()]
        self.record_file.unlink(missing_ok=True)
        return stopped

    def _pid_only(self, name: str) -> ManagedService:
        """The app as its pid file knows it: enough to probe and stop it, never to start it."""
        def not_startable() -> list[str]:
            raise KapparecError(f"{name} cannot be started without the demo's settings")

        return ManagedService(ServiceSpec(name, 0, not_startable, lambda: False, stop_timeout_s=30.0), self.run_dir)


def _endpoints(settings: AppSettings) -> list[str]:
    return ["--bootstrap", settings.bootstrap, "--redis", settings.redis_url]


def _stream_spec(settings: AppSettings, ports: AppPorts) -> ServiceSpec:
    return ServiceSpec("stream", 0, lambda: [KAPPAREC, "stream", *_endpoints(settings)],
                       lambda: stream_following(settings.bootstrap, settings.redis_url), stop_timeout_s=30.0)


def stream_following(bootstrap: str, redis_url: str) -> bool:
    """A stream job holds the writer lease and the current version has committed every event logged so far."""
    import redis

    from featurestore import layout
    from featurestore.reader import FeatureReader
    from streams import offsets, topics

    if not redis.Redis.from_url(redis_url).exists(layout.STREAM_LOCK):
        return False
    committed = FeatureReader(redis_url).committed_offsets()
    ends = offsets.end_offsets(bootstrap, topics.EVENTS)
    return all(int(committed.get(layout.offset_field(topics.EVENTS, p), 0)) >= end for p, end in ends.items())


def _serve_spec(settings: AppSettings, ports: AppPorts) -> ServiceSpec:
    from serving.server import wait_until_serving

    command = [KAPPAREC, "serve", "--port", str(ports.serve), "--metrics-port", str(ports.metrics), *_endpoints(settings),
               "--models-dir", str(settings.models_dir), "--experiments", str(settings.experiments_file)]
    return ServiceSpec("serve", ports.serve, lambda: command,
                       lambda: wait_until_serving(ports.server, lambda: True, timeout_s=1.0),
                       ready_timeout_s=SERVE_READY_S, stop_timeout_s=30.0)


def _console_spec(settings: AppSettings, ports: AppPorts) -> ServiceSpec:
    command = [KAPPAREC, "console", "--port", str(ports.console), "--server", ports.server, *_endpoints(settings),
               "--metrics-url", ports.metrics_url, "--models-dir", str(settings.models_dir),
               "--experiments", str(settings.experiments_file), "--allow-events"]
    return ServiceSpec("console", ports.console, lambda: command, lambda: _http_answers(ports.console_url),
                       ready_timeout_s=120.0)


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
