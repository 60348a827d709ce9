"""Start, probe and stop one local service process, tracked by a pid file under a run directory.

Used by ``kapparec infra`` for the long-lived local stack and by the test session, which
starts its own broker and Redis on free ports in a temporary run directory.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from infra.health import redis_healthy
from kapparec.errors import KapparecError


def redis_binary() -> Path:
    found = shutil.which("redis-server")
    if not found:
        raise KapparecError("redis-server is not installed (apt-get install redis-server)")
    return Path(found)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Where ``free_port`` looks: below the ephemeral range, whose ports any outgoing connection may take
# between the pick and the service's bind (the OS's own pick, port 0, comes from that range).
LISTEN_PORTS = range(20_000, 32_768)
# Its own generator: a test that seeds ``random`` must not make two processes pick alike.
_port_picker = random.Random()


def free_port() -> int:
    """A port free right now and outside the ephemeral range, for services that must not clash with a running stack."""
    for port in _port_picker.sample(LISTEN_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise KapparecError(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1} after 200 tries")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def live_pids(matches: Callable[[int, str, list[str]], bool]) -> list[int]:
    """Pids of running (non-zombie) processes for which ``matches(pid, stat_tail, argv)`` holds.

    ``stat_tail`` is ``/proc/<pid>/stat`` after the command name: state, ppid, pgid, ...
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_tail = (entry / "stat").read_text().rsplit(") ", 1)[1]
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            continue  # it exited while we looked
        if stat_tail[0] != "Z" and matches(int(entry.name), stat_tail, argv):
            found.append(int(entry.name))
    return found


def group_pids(pgid: int) -> list[int]:
    """Live members of a process group: what ``down`` must leave empty."""
    return live_pids(lambda _pid, stat_tail, _argv: int(stat_tail.split()[2]) == pgid)


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service. ``launch`` prepares whatever a start needs (config files, a
    formatted log) and returns the command: it runs at start only, so ``status`` and ``down``
    work where the service could not even be launched."""

    name: str
    port: int
    launch: Callable[[], Sequence[str]]
    # One real round trip of the service's own protocol: an open port proves nothing (Redis
    # accepts connections while it loads its append-only file, answering every command LOADING).
    answers: Callable[[], bool]
    ready_timeout_s: float = 20.0
    stop_timeout_s: float = 10.0


REDIS_AOF_DIR = "appendonlydir"  # under the data dir; Redis 7's default, named here so `infra wipe` finds it


def redis_spec(port: int, data_dir: Path) -> ServiceSpec:
    # Append-only file, fsync'd every second: the log now outlives the broker, so a Redis
    # restart keeps the features and committed offsets that match it, without a replay.
    # Every commit is one MULTI/EXEC or script, and Redis drops a transaction the AOF holds
    # only in part when it loads, so a crash never leaves half a bundle applied. No RDB
    # snapshots: the AOF is the one persistence, with its own rewrite in the background.
    return ServiceSpec("redis", port, lambda: (
        str(redis_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--appenddirname", REDIS_AOF_DIR,
        "--aof-load-truncated", "yes",
        "--protected-mode", "yes",
        "--maxmemory-policy", "noeviction",
    ), lambda: redis_healthy(f"redis://127.0.0.1:{port}/0"))


class ManagedService:
    """One process of the stack: ``<run_dir>/<name>.pid`` and ``<run_dir>/logs/<name>.log``."""

    def __init__(self, spec: ServiceSpec, run_dir: Path):
        self.spec = spec
        self.run_dir = run_dir
        self.pid_file = run_dir / f"{spec.name}.pid"
        self.log_file = run_dir / "logs" / f"{spec.name}.log"

    def recorded_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.recorded_pid() is not None

    def start(self) -> bool:
        """Start unless already running; True when this call started it. Idempotent."""
        if self.running():
            return False
        if port_open(self.spec.port):
            raise KapparecError(
                f"port {self.spec.port} for {self.spec.name} is held by another process, not ours "
                f"(free it or choose another port)"
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self.spec.launch()
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                start_new_session=True,  # survives the CLI that started it; no terminal signals
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self._wait_ready(proc, self.spec.ready_timeout_s)
        return True

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise KapparecError(f"{self.spec.name} exited at start (code {proc.returncode}); see {self.log_file}")
            if port_open(self.spec.port) and self.spec.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise KapparecError(f"{self.spec.name} did not answer on port {self.spec.port} within {timeout:.0f}s; see {self.log_file}")

    def stop(self) -> bool:
        """Stop the recorded process and its whole group (TERM, then KILL); True when something was running.

        Raises ``KapparecError`` if any member of the group survives SIGKILL.
        """
        pid = self.recorded_pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, self.spec.stop_timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not pid_alive(pid) and not group_pids(pid):
                    return True
                time.sleep(0.05)
        raise KapparecError(f"{self.spec.name} (process group {pid}) survived SIGKILL: {group_pids(pid)}")
