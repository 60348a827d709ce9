"""Where the CPU went during a benchmark: CPU seconds per named group of processes, from ``/proc``.

A group is a predicate on a process (pid and argv), so processes that start during the run (the
SDK workers of a Flink job, Beam's job server) are counted from when the sampler first sees
them: it looks every ``interval_s``, so a process younger than that loses at most that much.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from infra.services import live_pids
from kapparec.threads import Beside

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# (pid, /proc/<pid>/stat after the command name, argv), as ``infra.services.live_pids`` gives them.
Matcher = Callable[[int, str, list[str]], bool]


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of ``pid`` so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle, not waiting for I/O) since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS_PER_S


def listening_pid(port: int) -> int | None:
    """The process holding a listening TCP socket on ``port``, whatever it runs (Tansu, Kafka, Redis)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        try:
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    return None


class CpuBudget(Beside):
    """Samples the groups' processes until the block ends; ``cores()`` is CPU seconds per wall second.

    ``machine_cores()`` is what the whole machine used meanwhile, so what the groups did not use
    shows whether the cores were free or taken by other work."""

    def __init__(self, groups: dict[str, Matcher], interval_s: float = 0.5):
        super().__init__(name="cpu-budget")
        self._groups, self._interval_s = groups, interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._group_of: dict[int, str] = {}
        self._sampling_from = self._sampling_until = time.monotonic()
        self._machine_from = self._machine_until = 0.0

    def run(self) -> None:
        self._sampling_from, self._machine_from = time.monotonic(), machine_busy_seconds()
        self._sample()
        while not self._done.wait(self._interval_s):
            self._sample()
        self._sample()
        self._sampling_until, self._machine_until = time.monotonic(), machine_busy_seconds()

    def _sample(self) -> None:
        found: dict[int, str] = {}

        def classify(pid: int, stat_tail: str, argv: list[str]) -> bool:
            found.update({pid: name for name, matches in self._groups.items() if matches(pid, stat_tail, argv)})
            return pid in found

        for pid in live_pids(classify):
            used = cpu_seconds(pid)
            if used is not None:
                self._first.setdefault(pid, used)
                self._last[pid] = used
                self._group_of[pid] = found[pid]

    def cores(self) -> dict[str, float]:
        """Per group, the cores it used on average over the block (1.0: one core all the time)."""
        used = dict.fromkeys(self._groups, 0.0)
        for pid, name in self._group_of.items():
            used[name] += self._last[pid] - self._first[pid]
        return {name: round(seconds / self._wall(), 2) for name, seconds in used.items()}

    def machine_cores(self) -> float:
        """The cores the whole machine kept busy on average over the block, every process counted."""
        return round((self._machine_until - self._machine_from) / self._wall(), 2)

    def processes(self) -> dict[str, int]:
        """Per group, how many processes it had over the block (SDK workers: one per subtask asked)."""
        counts = dict.fromkeys(self._groups, 0)
        for name in self._group_of.values():
            counts[name] += 1
        return counts

    def _wall(self) -> float:
        return max(self._sampling_until - self._sampling_from, 1e-9)
