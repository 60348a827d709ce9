"""Where the CPU went during a benchmark: CPU seconds per named group of processes, from ``/proc``.

A group is a predicate on a process (pid and argv), so processes that start during the run (the
SDK workers of a Flink job, Beam's job server) are counted from when the sampler first sees
them: it looks every ``interval_s``, so a process younger than that loses at most that much.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.services import live_pids
from kapparec.threads import Sampler

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# (pid, /proc/<pid>/stat after the command name, argv), as ``infra.services.live_pids`` gives them.
Matcher = Callable[[int, str, list[str]], bool]
# (start, stop) in wall-clock seconds (time.time()).
Window = tuple[float, float]


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


@dataclass(frozen=True)
class _Sample:
    wall: float  # time.time(): a window is given in wall-clock time, as Flink reports a job's
    machine_busy: float
    used: dict[int, float]  # CPU seconds so far, per pid of the groups


class CpuBudget(Sampler):
    """Samples the groups' processes until the block ends; ``cores()`` is CPU seconds per wall second.

    ``machine_cores()`` is what the whole machine used meanwhile, so what the groups did not use
    shows whether the cores were free or taken by other work. Both take an optional wall-clock
    window, so the figures of a job inside a longer command (a Flink job, without the JVMs'
    start-up around it) come from the same samples."""

    def __init__(self, groups: dict[str, Matcher], interval_s: float = 0.5):
        super().__init__(interval_s, name="cpu-budget")
        self._groups = groups
        self._samples: list[_Sample] = []
        self._group_of: dict[int, str] = {}

    def sample(self) -> None:
        found: dict[int, str] = {}

        def classify(pid: int, stat_tail: str, argv: list[str]) -> bool:
            found.update({pid: name for name, matches in self._groups.items() if matches(pid, stat_tail, argv)})
            return pid in found

        used = {pid: seconds for pid in live_pids(classify) if (seconds := cpu_seconds(pid)) is not None}
        self._group_of.update({pid: found[pid] for pid in used})
        self._samples.append(_Sample(time.time(), machine_busy_seconds(), used))

    def cores(self, window: Window | None = None) -> dict[str, float]:
        """Per group, the cores it used on average over the block or ``window`` (1.0: one core all the time)."""
        samples = self._within(window)
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for sample in samples:
            for pid, seconds in sample.used.items():
                first.setdefault(pid, seconds)
                last[pid] = seconds
        used = dict.fromkeys(self._groups, 0.0)
        for pid, seconds in last.items():
            used[self._group_of[pid]] += seconds - first[pid]
        wall = _wall(samples)
        return {name: round(seconds / wall, 2) for name, seconds in used.items()}

    def machine_cores(self, window: Window | None = None) -> float:
        """The cores the whole machine kept busy on average over the block or ``window``, every process counted."""
        samples = self._within(window)
        return round((samples[-1].machine_busy - samples[0].machine_busy) / _wall(samples), 2)

    def processes(self) -> dict[str, int]:
        """Per group, how many processes it had over the block (SDK workers: one per subtask asked)."""
        counts = dict.fromkeys(self._groups, 0)
        for name in self._group_of.values():
            counts[name] += 1
        return counts

    def _within(self, window: Window | None) -> list[_Sample]:
        if window is None:
            return self._samples
        start, stop = window
        inside = [sample for sample in self._samples if start <= sample.wall <= stop]
        if len(inside) < 2:
            raise ValueError(f"the window {stop - start:.2f} s holds fewer than two samples")
        return inside


def _wall(samples: list[_Sample]) -> float:
    return max(samples[-1].wall - samples[0].wall, 1e-9)
