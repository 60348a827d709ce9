"""``kapparec bench flink``: the feature jobs on a local Flink cluster beside the DirectRunner, in one run.

Everything runs on a private broker, Redis and Flink cluster the benchmark starts and stops. One
synthetic log is backfilled three times: on the DirectRunner, then on Flink at parallelism 1 and
2 (as many SDK worker processes as subtasks). Each backfill reports its rate over the command
(job-server start and submission included) and over the Flink job alone, and where the CPU went
(``kapparec.cpu_budget``: the backfill command, Beam's job server, the SDK workers, the
TaskManager, the JobManager, Redis, the broker), because on a 2-core host parallelism 2 is bounded
by what else needs the cores. Then the continuous job's freshness, idle and under load, on both
runners, beside the raw consume rate of the same log as the backfills' ceiling.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from infra.flink import FlinkCluster
from infra.health import flink_jobs
from infra.private import PrivateStack, private_stack
from infra.services import free_port
from kapparec.cpu_budget import CpuBudget, Matcher, listening_pid
from kapparec.errors import KapparecError
from streams import topics
from streams.synthetic import SyntheticLog
from transforms.bench import measure_freshness, produce_log, raw_consume_rate
from transforms.job_control import unique_job_name

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
QUICK_EVENTS = 100_000
QUICK_N = 100


def flink_benchmark(events: int = 1_000_000, n: int = 250, load_per_s: float = 2_000.0, rate_per_s: float = 20.0,
                    quick: bool = False, seed: int = 0) -> dict:
    if quick:
        events, n = min(events, QUICK_EVENTS), min(n, QUICK_N)
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
    p1, p2 = backfills["flink_p1"], backfills["flink_p2"]
    return {
        "events": events,
        "ceiling_events_per_s": round(ceiling),
        "backfill": backfills,
        "p2_over_p1_job": round(p2["job_events_per_s"] / p1["job_events_per_s"], 2),
        "freshness": freshness,
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
    meanwhile. A command of its own, as a user runs it: its exit also stops the job server it started."""
    name = unique_job_name("bench")
    args = ("--job_name", name, "--parallelism", str(parallelism)) if parallelism else ()
    command = [KAPPAREC, "backfill", "--no-progress", "--runner", runner, "--bootstrap", stack.bootstrap,
               "--redis", stack.redis_url, *args]
    with CpuBudget(groups) as budget:
        started = time.perf_counter()
        ran = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
    if ran.returncode != 0:
        # The command's own last line says why (its one-line error, or the exception's).
        last = (ran.stderr.strip().splitlines() or ["no output"])[-1]
        raise KapparecError(f"the {runner} backfill failed (exit {ran.returncode}): {last}")
    cores = budget.cores()
    figures = {
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "cpu_cores": cores,
        "cpu_cores_total": round(sum(cores.values()), 2),
        # Every process on the machine: what ours did not use went to other work, not to idle cores.
        "machine_cores_busy": budget.machine_cores(),
        "sdk_worker_processes": budget.processes()["sdk_workers"],
    }
    if master:
        job = next(job for job in flink_jobs(master) or [] if job["name"] == name)
        figures |= {"parallelism": parallelism, "job_state": job["state"],
                    "job_seconds": round(job["duration"] / 1000, 2),
                    "job_events_per_s": round(events / (job["duration"] / 1000))}
    return figures
