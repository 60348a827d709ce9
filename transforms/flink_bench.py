"""``kapparec bench flink``: the feature jobs on a local Flink cluster beside the DirectRunner, in one run.

Everything runs on a private broker, Redis and Flink cluster the benchmark starts and stops. One
synthetic log is backfilled three times: on the DirectRunner, then on Flink at parallelism 1 and
2 (as many SDK worker processes as subtasks). Each backfill reports its rate over the command
(job-server start and submission included) and over the Flink job alone, and where the CPU went
(``kapparec.cpu_budget``: the backfill command, Beam's job server, the SDK workers, the
TaskManager, the JobManager, Redis, the broker) over the command and while commits were merged,
with the share of Redis's one thread that the merges took. Each subtask reads and commits its
own partitions, but every commit is merged on that one thread, so once it is busy all the time
it bounds the backfill at any parallelism.
Then the continuous job's freshness, idle and under load, on both runners, beside the raw consume
rate of the same log as the backfills' ceiling. Last, the continuous job on Flink under load for
minutes (``continuous_run``): the TaskManager's heap after a full GC, the keyed state on it and
its RSS, which must stay flat (beam#27648 made them grow until the TaskManager ran out of heap;
the job-server jar carries the fix), and the store it built, which must equal a DirectRunner
backfill of the same log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from featurestore.redis_store import RedisFeatureStore
from infra.flink import FlinkCluster
from infra.health import flink_jobs, flink_rest
from infra.private import PrivateStack, private_stack
from infra.services import free_port
from kapparec.cpu_budget import CpuBudget, Matcher, listening_pid
from kapparec.errors import KapparecError
from kapparec.threads import Beside, Sampler
from streams import topics
from streams.synthetic import SyntheticLog
from transforms.bench import (BackgroundLoad, _LagSampler, measure_freshness, produce_log, raw_consume_rate,
                              stream_process, wait_until_caught_up)
from transforms.job_control import unique_job_name

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
QUICK_EVENTS = 100_000
QUICK_N = 100
CONTINUOUS_S, QUICK_CONTINUOUS_S = 600.0, 120.0
# `jcmd PID GC.heap_info` of a G1 JVM: "garbage-first heap   total 409600K, used 51234K [...]".
HEAP_USED = re.compile(r"heap\s+total \d+K, used (\d+)K")
# Flink's heap keyed state: a table per state name, a map per table and key group.
STATE_CLASSES = {"state_tables": "org.apache.flink.runtime.state.heap.CopyOnWriteStateTable",
                 "state_maps": "org.apache.flink.runtime.state.heap.CopyOnWriteStateMap"}


def flink_benchmark(events: int = 1_000_000, n: int = 250, load_per_s: float = 2_000.0, rate_per_s: float = 20.0,
                    quick: bool = False, seed: int = 0, continuous_s: float = CONTINUOUS_S) -> dict:
    if quick:
        events, n, continuous_s = min(events, QUICK_EVENTS), min(n, QUICK_N), min(continuous_s, QUICK_CONTINUOUS_S)
    # The commands find the cluster through KAPPAREC_RUN_DIR, as a user's find the one `infra up` started.
    with private_stack() as stack, private_flink() as cluster, _env(KAPPAREC_RUN_DIR=str(cluster.run_dir)):
        produce_log(stack, SyntheticLog(users=20_000, items=5_000, events=events, seed=seed), partitions=4)
        _, ceiling = raw_consume_rate(stack.bootstrap, topics.EVENTS)
        groups = process_groups(stack, cluster)
        master = f"localhost:{cluster.port}"
        backfills = {
            "direct": budgeted_backfill(stack, groups, events, "DirectRunner"),
            "flink_p1": budgeted_backfill(stack, groups, events, "FlinkRunner", 1, master),
            "flink_p2": budgeted_backfill(stack, groups, events, "FlinkRunner", 2, master),
        }
        freshness = {
            "direct": measure_freshness(stack, n, rate_per_s, load_per_s, seed, tag="-direct"),
            "flink": measure_freshness(stack, n, rate_per_s, load_per_s, seed, ("--runner", "FlinkRunner"),
                                       tag="-flink"),
        }
        continuous = continuous_run(stack, cluster, continuous_s, load_per_s, seed)
        continuous["direct_backfill"] = compare_with_a_direct_backfill(stack)
    p1, p2 = backfills["flink_p1"], backfills["flink_p2"]
    return {
        "events": events,
        "ceiling_events_per_s": round(ceiling),
        "backfill": backfills,
        "p2_over_p1_job": round(p2["job_events_per_s"] / p1["job_events_per_s"], 2),
        "freshness": freshness,
        "continuous": continuous,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def private_flink() -> Iterator[FlinkCluster]:
    """A Flink cluster of this benchmark's own, as ``infra up --with-flink`` starts one."""
    with tempfile.TemporaryDirectory(prefix="kapparec-flink-") as run_dir:
        cluster = FlinkCluster(Path(run_dir), free_port())
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables for this block: the commands it starts inherit them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def process_groups(stack: PrivateStack, cluster: FlinkCluster) -> dict[str, Matcher]:
    """The processes a backfill's CPU is spread over, by role."""
    me, conf = str(os.getpid()), str(cluster.conf_dir)
    pool = cluster.worker_pool().recorded_pid()
    redis_pid = listening_pid(int(stack.redis_url.rsplit(":", 1)[1].split("/")[0]))
    broker_pid = listening_pid(int(stack.bootstrap.rsplit(":", 1)[1]))
    return {
        "backfill_command": lambda pid, stat, argv: stat.split()[1] == me and "backfill" in argv,
        "job_server": lambda pid, stat, argv: "-jar" in argv and any("job-server" in a for a in argv),
        "sdk_workers": lambda pid, stat, argv: pid != pool and int(stat.split()[2]) == pool,
        "taskmanager": lambda pid, stat, argv: conf in argv and any("TaskManagerRunner" in a for a in argv),
        "jobmanager": lambda pid, stat, argv: conf in argv and any("ClusterEntrypoint" in a for a in argv),
        "redis": lambda pid, stat, argv: pid == redis_pid,
        "broker": lambda pid, stat, argv: pid == broker_pid,
    }


def budgeted_backfill(stack: PrivateStack, groups: dict[str, Matcher], events: int, runner: str,
                      parallelism: int | None = None, master: str | None = None) -> dict:
    """One ``kapparec backfill`` of the whole log, timed, with the cores each group of processes used
    meanwhile. A command of its own, as a user runs it: its exit also stops the job server it started.

    ``committing`` gives the cores again over the stretch in which commits were merged: the
    command's figures include the JVMs' and the SDK workers' start-up around it. Its
    ``merge_script_cores`` is the share of Redis's one thread that the merges took then: every
    commit of every subtask runs there in turn, so near 1.0 it, not the cores, bounds the backfill
    at any parallelism."""
    name = unique_job_name("bench")
    args = ("--job_name", name, "--parallelism", str(parallelism)) if parallelism else ()
    command = [KAPPAREC, "backfill", "--no-progress", "--runner", runner, "--bootstrap", stack.bootstrap,
               "--redis", stack.redis_url, *args]
    with CpuBudget(groups, interval_s=0.25) as budget, MergeWatch(stack.redis_url) as merges:
        started = time.perf_counter()
        ran = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
    if ran.returncode != 0:
        # The command's own last line says why (its one-line error, or the exception's).
        last = (ran.stderr.strip().splitlines() or ["no output"])[-1]
        raise KapparecError(f"the {runner} backfill failed (exit {ran.returncode}): {last}")
    cores, committing = budget.cores(), merges.window()
    figures = {
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "cpu_cores": cores,
        "cpu_cores_total": round(sum(cores.values()), 2),
        # Every process on the machine: what ours did not use went to other work, not to idle cores.
        "machine_cores_busy": budget.machine_cores(),
        "sdk_worker_processes": budget.processes()["sdk_workers"],
        "committing": {"seconds": round(committing[1] - committing[0], 2), "cpu_cores": budget.cores(committing),
                       "machine_cores_busy": budget.machine_cores(committing),
                       "merge_script_cores": merges.share(),
                       "merge_script_us_per_event": round(1e6 * merges.seconds() / events, 2)},
    }
    if master:
        job = next(job for job in flink_jobs(master) or [] if job["name"] == name)
        figures |= {"parallelism": parallelism, "job_state": job["state"],
                    "job_seconds": round(job["duration"] / 1000, 2),
                    "job_events_per_s": round(events / (job["duration"] / 1000))}
    return figures


class MergeWatch(Sampler):
    """Redis's time in scripts (``INFO commandstats``), sampled until the block ends: when the commits'
    merges ran, and the share of Redis's one thread they took meanwhile. Redis times a command on
    the wall clock, so on a machine short of cores the figures include Redis's waits for one."""

    def __init__(self, redis_url: str, interval_s: float = 0.25):
        super().__init__(interval_s, name="merge-watch")
        self._client = redis.Redis.from_url(redis_url)
        self._samples: list[tuple[float, float]] = []  # (time.time(), script seconds so far)

    def sample(self) -> None:
        stats = self._client.info("commandstats")
        used = sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in ("evalsha", "eval")) / 1e6
        self._samples.append((time.time(), used))

    def _span(self) -> tuple[int, int]:
        """The samples around the merges: the last before the first and the first after the last."""
        rose = [i for i in range(1, len(self._samples)) if self._samples[i][1] > self._samples[i - 1][1]]
        if not rose:
            raise KapparecError("the backfill merged no commit into Redis")
        return rose[0] - 1, rose[-1]

    def window(self) -> tuple[float, float]:
        first, last = self._span()
        return self._samples[first][0], self._samples[last][0]

    def seconds(self) -> float:
        """Redis's time in the merges, all of them."""
        first, last = self._span()
        return self._samples[last][1] - self._samples[first][1]

    def share(self) -> float:
        first, last = self._span()
        return round(self.seconds() / (self._samples[last][0] - self._samples[first][0]), 2)


def continuous_run(stack: PrivateStack, cluster: FlinkCluster, seconds: float, load_per_s: float, seed: int = 0,
                   interval_s: float = 30.0, stream_args: tuple[str, ...] = ()) -> dict:
    """``kapparec stream --runner FlinkRunner [stream_args]`` on ``cluster``, under ``load_per_s`` events/s for
    ``seconds``, its TaskManager sampled every ``interval_s`` (``TaskManagerWatch``); then the load stops and
    the job must catch up with the log."""
    master = f"localhost:{cluster.port}"
    with stream_process(stack, ("--runner", "FlinkRunner", *stream_args), {"KAPPAREC_RUN_DIR": str(cluster.run_dir)}):
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        wait_until_caught_up(client, stack.bootstrap)
        with (BackgroundLoad(stack.bootstrap, load_per_s, seed) as load, _LagSampler(client, stack.bootstrap) as lag,
              TaskManagerWatch(master, cluster.taskmanager_pids()[0], interval_s) as watch):
            time.sleep(seconds)
        catch_up_s = seconds_to_catch_up(client, stack.bootstrap)
    return {
        "seconds": seconds,
        "load_events_per_s": round(load.events_per_s),
        "max_lag_records": lag.max_lag,
        "lag_first_half_max": lag.half_max(0),
        "lag_second_half_max": lag.half_max(1),
        "catch_up_s": catch_up_s,
        "samples": watch.samples,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def compare_with_a_direct_backfill(stack: PrivateStack) -> dict:
    """Stream == backfill over the whole run: a DirectRunner backfill of the log as the stopped
    continuous job left it, dumped beside the version that job (and the benchmark's earlier jobs,
    on both runners) built. Each dump line is one key with its whole value; the lines are held as
    hashes, so a store of millions of keys compares in memory."""
    store = RedisFeatureStore(stack.redis_url)
    followed = store.current_version()
    subprocess.run([KAPPAREC, "backfill", "--no-progress", "--bootstrap", stack.bootstrap, "--redis", stack.redis_url],
                   stdout=subprocess.DEVNULL, check=True)
    built = {hash(line) for line in store.dump(followed)}
    replayed = {hash(line) for line in store.dump(store.current_version())}
    return {"keys": len(replayed), "only_followed": len(built - replayed), "only_replayed": len(replayed - built),
            "equal": built == replayed}


def seconds_to_catch_up(client: redis.Redis, bootstrap: str, timeout_s: float = 120.0) -> float | None:
    """How long the continuous job took to commit the whole log as it is now; None when it did not within
    ``timeout_s`` (a job that fell behind for good)."""
    started = time.monotonic()
    try:
        wait_until_caught_up(client, bootstrap, timeout_s)
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 1)


class TaskManagerWatch(Beside):
    """Every ``interval_s``: the TaskManager's heap after a full GC, its keyed state on that heap, its RSS, the
    running job with its checkpoints, and the machine's load.

    The heap is read after a full collection (``jcmd GC.class_histogram`` makes one), so garbage not yet
    collected does not pass for growth. The keyed state is counted as Flink's heap backend holds it: a state
    table per state name, a state map per table and key group. The leak of beam#27648 was a new table per
    self-checkpoint, so those counts are the leak's own measure, and need no completed checkpoint.
    """

    def __init__(self, master: str, taskmanager_pid: int, interval_s: float):
        super().__init__(name="taskmanager-watch")
        self._master, self._pid, self._interval_s = master, taskmanager_pid, interval_s
        self.samples: list[dict] = []

    def run(self) -> None:
        started = time.monotonic()
        while not self._done.wait(self._interval_s):
            self.samples.append({"t_s": round(time.monotonic() - started, 1), **self.sample()})

    def sample(self) -> dict:
        running = [job["jid"] for job in flink_jobs(self._master) or [] if job["state"] == "RUNNING"]
        return {
            **live_heap(self._pid),
            "rss_mb": rss_mb(self._pid),
            "running_jobs": running,
            "checkpoints": checkpoints(self._master, running[0]) if running else None,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }


def jcmd(pid: int, command: str) -> str | None:
    """What a JVM answers to a ``jcmd`` diagnostic command (JDK tools); None once it is gone or hangs (a JVM
    out of heap may)."""
    found = shutil.which("jcmd")
    if found is None:
        raise KapparecError("jcmd is not installed: run `make install` (openjdk-17-jdk-headless)")
    try:
        answered = subprocess.run([found, str(pid), command], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return answered.stdout if answered.returncode == 0 else None


def live_heap(pid: int) -> dict:
    """The heap a JVM holds after a full collection, and the Flink heap state tables and maps in it."""
    histogram = jcmd(pid, "GC.class_histogram")  # collects first: live objects only
    info = jcmd(pid, "GC.heap_info")
    used = HEAP_USED.search(info or "")
    instances = instance_counts(histogram or "", set(STATE_CLASSES.values()))
    return {
        "heap_after_gc_mb": round(int(used.group(1)) / 1024, 1) if used else None,
        **{name: instances.get(cls, 0) if histogram else None for name, cls in STATE_CLASSES.items()},
    }


def instance_counts(histogram: str, classes: set[str]) -> dict[str, int]:
    """Instances of each of ``classes`` in a ``jcmd GC.class_histogram``, whose rows read
    ``   7:   1200   96000  org.example.Name (module)``."""
    counts = {}
    for row in histogram.splitlines():
        fields = row.split()
        if len(fields) >= 4 and fields[3] in classes:
            counts[fields[3]] = int(fields[1])
    return counts


def checkpoints(master: str, jid: str) -> dict:
    """The job's checkpoint counts and the state size of its last completed one (None before the first)."""
    document = flink_rest(master, f"/jobs/{jid}/checkpoints") or {}
    completed = (document.get("latest") or {}).get("completed") or {}
    return {**document.get("counts", {}), "state_bytes": completed.get("state_size")}


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kilobytes / 1024, 1)
