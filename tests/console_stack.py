"""A live stack for the web console: a synthetic log that ends now, backfilled, a real
``kapparec stream`` job, a real ``kapparec serve`` with an A/B experiment, and ``kapparec console``.

The browser tests and the README screenshot (``make screenshot``) both build it here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from infra.services import free_port
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from tests.serving_helpers import TOKEN, Server, start_server, write_experiments
from transforms.bench import wait_until_caught_up
from transforms.jobs import backfill

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))


@dataclass(frozen=True)
class World:
    """The synthetic log's shape, which ``kapparec simulate`` needs to act as its users."""

    users: int = 60
    items: int = 150
    events: int = 6_000
    seed: int = 6
    malformed_share: float = 0.005  # a few dead letters for the system panel

    def log(self) -> SyntheticLog:
        return SyntheticLog.ending_at(int(time.time() * 1000), users=self.users, items=self.items,
                                      events=self.events, seed=self.seed, malformed_share=self.malformed_share)

    def simulate_args(self) -> list[str]:
        return ["--world-users", str(self.users), "--world-items", str(self.items), "--world-seed", str(self.seed)]


@dataclass
class LiveConsole:
    bootstrap: str
    redis_url: str
    world: World
    log: SyntheticLog
    server: Server
    consoles: dict[str, str] = field(default_factory=dict)  # name -> base URL
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.server.stop()

    def simulate(self, seconds: float, users: int = 30) -> subprocess.CompletedProcess:
        """``kapparec simulate`` for ``seconds``, then until the stream job has committed all it sent."""
        command = [KAPPAREC, "simulate", "--users", str(users), "--duration", str(seconds), "--server",
                   self.server.address, "--token", TOKEN, "--seed", "2", "--json", *self.world.simulate_args()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        wait_until_caught_up(redis.Redis.from_url(self.redis_url, decode_responses=True), self.bootstrap, timeout_s=120)
        return done


def fill_store(bootstrap: str, redis_url: str, world: World) -> SyntheticLog:
    """The world's log, ending now, on the broker and backfilled into the store."""
    log = world.log()
    produce_synthetic(bootstrap, log)
    backfill(bootstrap, redis_url, progress=False)
    return log


def start_live_console(bootstrap: str, redis_url: str, work_dir: Path, world: World = World(),
                       models_dir: Path | None = None, log: SyntheticLog | None = None) -> LiveConsole:
    """Every process up and answering, over ``log`` (default: the world's, put in the store
    first). ``models_dir`` defaults to an empty registry: serving then answers without a
    personal model (trending, popular, co-occurrence)."""
    log = log or fill_store(bootstrap, redis_url, world)
    experiments = work_dir / "experiments.toml"
    write_experiments(experiments, salt="console", control_share=0.5)
    models_dir = models_dir or _empty_dir(work_dir / "models")
    processes = [_background([KAPPAREC, "stream", "--bootstrap", bootstrap, "--redis", redis_url], work_dir / "stream.log")]
    server = start_server(bootstrap, redis_url, models_dir, work_dir, "--experiments", str(experiments))
    live = LiveConsole(bootstrap, redis_url, world, log, server, processes=processes)
    common = ["--server", server.address, "--redis", redis_url, "--bootstrap", bootstrap, "--metrics-url",
              f"http://localhost:{server.metrics_port}/metrics", "--models-dir", str(models_dir),
              "--experiments", str(experiments), "--token", TOKEN]
    try:
        for name, extra in (("events", ["--allow-events"]), ("read_only", [])):
            port = free_port()
            live.processes.append(_background([KAPPAREC, "console", "--port", str(port), *common, *extra],
                                              work_dir / f"console-{name}.log"))
            live.consoles[name] = f"http://127.0.0.1:{port}"
            wait_for_http(live.consoles[name] + "/users", live.processes[-1])
    except BaseException:
        live.stop()
        raise
    return live


def _empty_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _background(command: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ))


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the console exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")
