"""``kapparec bench serving``: Recommend under 1, 8 and 32 concurrent clients beside the empty-RPC ceiling.

On a private broker, Redis and registry: a synthetic log with a large catalog is backfilled, a
two-tower trained on it is exported with its ScaNN index over the whole catalog and promoted,
and ``kapparec serve`` runs with one worker per core. The ceiling is an empty unary RPC (the
health Check) on the same server at the same concurrency: what the gRPC stack alone allows.

After them, at 25%, 50% and 80% of the 8-client QPS, an open loop (``serving.open_loop``) times
requests from their scheduled send times; then the 8-client level runs again while ``kapparec
stream`` applies 2,000 events/s to the store serving reads (``live_ingest``).

Beside the wall-clock figures, each level reports the server's CPU milliseconds per request for
both RPCs (``server_cpu_ms``: every process of the server, from /proc) and, for Recommend, the
handler thread's own (``handler_cpu_ms``, from ``kapparec_rpc_cpu_seconds``): on a shared machine
they move far less than latency and QPS, and their difference is what a request costs outside
its handler (gRPC's threads, hand-offs, the impressions sender). ``redis_cpu_ms`` is Redis's own
CPU per Recommend (``INFO cpu``), the snapshot's background reads included.

Right after the 8-client level, ``in_process`` calls the Recommend handler itself back to back on
one thread of a fresh process, over the same store and model: no gRPC, no hand-offs, and no other
process on the caches between requests. It is the least this request path's Python costs on this
machine, to hold beside ``server_cpu_ms`` and the empty RPC's.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import redis

from infra.services import free_port
from serving import metrics
from serving.loadgen import EMPTY, RECOMMEND, Load, run_load
from serving.open_loop import run_open_loop
from serving.server import wait_until_serving
from streams.synthetic import SyntheticLog
from infra.private import private_stack
from transforms.bench import BackgroundLoad, produce_log, redis_cpu_s, stream_process, wait_until_caught_up

# The client count whose run reports the per-stage CPU, and whose rate the open loop takes shares of.
STAGE_LEVEL = 8
OPEN_LOOP_SHARES = (25, 50, 80)  # percent of the STAGE_LEVEL closed loop's QPS
LIVE_EVENTS_PER_S = 2_000.0
# Requests the in-process handler is timed on, in chunks each asked twice: once computed by the
# funnel, then again within the response cache's TTL (answered from it).
IN_PROCESS_REQUESTS = 1_000
IN_PROCESS_CHUNK = 100


def serving_benchmark(items: int = 100_000, users: int = 10_000, events: int = 200_000,
                      clients: tuple[int, ...] = (1, 8, 32), seconds: float = 30.0, workers: int | None = None) -> dict:
    workers = workers or os.cpu_count() or 1
    with private_stack() as stack, tempfile.TemporaryDirectory(prefix="kapparec-bench-models-") as models:
        # Activity is heavy-tailed: twice as many synthetic users leaves at least ``users`` with history.
        produce_log(stack, SyntheticLog(users=users * 2, items=items, events=events, seed=0), partitions=4)
        known_users, index = _train_and_promote(stack, Path(models))
        if len(known_users) < users:
            raise RuntimeError(f"the synthetic log has {len(known_users)} users with history, fewer than {users}")
        served_users = known_users[:users]
        port, metrics_port = free_port(), free_port()
        command = [str(Path(sys.executable).with_name("kapparec")), "serve", "--port", str(port), "--metrics-port",
                   str(metrics_port), "--workers", str(workers), "--bootstrap", stack.bootstrap, "--redis", stack.redis_url,
                   "--models-dir", models]
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            address = f"localhost:{port}"
            if not wait_until_serving(address, lambda: server.poll() is None, timeout_s=300):
                raise RuntimeError("kapparec serve did not come up for the benchmark")
            # The leaves ScaNN searches, as export calibrated them: the two-tower stage's cost follows them.
            result = {"items": items, "users": len(served_users), "workers": workers, "seconds": seconds,
                      "index": index, "clients": {}, "ceiling_qps": {}, "ceiling": {}}
            store = redis.Redis.from_url(stack.redis_url)
            for n in clients:
                handler_before, stages_before = handler_cpu(metrics_port), stage_cpu(metrics_port)
                redis_before = redis_cpu_s(store)
                load, load_cpu_ms = _measured(server.pid, lambda: run_load(address, RECOMMEND, n, seconds, served_users))
                redis_ms = round(1000 * (redis_cpu_s(store) - redis_before) / max(1, load.requests), 3)
                handler_after = handler_cpu(metrics_port)
                handler_ms = _handler_ms_per_request(handler_before, handler_after)
                if n == STAGE_LEVEL:
                    result["stage_cpu_ms"] = stage_cpu_ms(stages_before, stage_cpu(metrics_port),
                                                          handler_after[1] - handler_before[1], load_cpu_ms, handler_ms)
                ceiling, ceiling_cpu_ms = _measured(server.pid, lambda: run_load(address, EMPTY, n, seconds, served_users))
                result["clients"][str(n)] = load.as_dict() | {
                    "ratio_to_ceiling": round(load.qps / ceiling.qps, 3), "server_cpu_ms": load_cpu_ms,
                    "handler_cpu_ms": handler_ms, "redis_cpu_ms": redis_ms}
                result["ceiling_qps"][str(n)] = ceiling.qps
                result["ceiling"][str(n)] = ceiling.as_dict() | {"server_cpu_ms": ceiling_cpu_ms}
                if n == STAGE_LEVEL:  # beside the level it is held to, before live ingest changes the store
                    result["in_process"] = _in_fresh_process(handler_in_process, stack.redis_url, Path(models),
                                                             served_users)
            result["stage_mean_ms"] = stage_means(metrics_port)
            if str(STAGE_LEVEL) in result["clients"]:
                most = result["clients"][str(STAGE_LEVEL)]["qps"]
                result["open_loop"] = {str(share): run_open_loop(address, most * share / 100, seconds, served_users)
                                       for share in OPEN_LOOP_SHARES}
                result["live_ingest"] = _under_live_ingest(stack, address, seconds, served_users)
            return result
        finally:
            server.terminate()
            server.wait(60)


def _under_live_ingest(stack, address: str, seconds: float, users: list[str]) -> dict:
    """The ``STAGE_LEVEL`` closed loop again while ``kapparec stream`` applies ``LIVE_EVENTS_PER_S``
    to the Redis that serving reads (their caches and snapshots then keep moving)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stream_process(stack):
        wait_until_caught_up(client, stack.bootstrap)
        with BackgroundLoad(stack.bootstrap, LIVE_EVENTS_PER_S, seed=0) as ingest:
            load = run_load(address, RECOMMEND, STAGE_LEVEL, seconds, users)
    return {"events_per_s": round(ingest.events_per_s), "qps": load.qps, "p99_ms": load.p99_ms, "errors": load.errors,
            "served_from": load.served_from}


def _in_fresh_process(function: Callable, *args):
    """``function(*args)`` in a spawned interpreter, as a server worker is: this process holds what
    training left (TensorFlow's graph and threads, a larger heap), which a worker never has."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def handler_in_process(redis_url: str, models_dir: Path, users: list[str], requests: int = IN_PROCESS_REQUESTS) -> dict:
    """The Recommend handler's thread CPU per request, called on this thread as the server's threads
    call it (with no impressions log): ``first`` for pages the funnel computes (users not asked
    before), ``again`` for the same requests answered from the response cache; and what each served."""
    from kapparec.v1 import recommender_pb2 as pb

    # Half the users warm the path (neighbour lists, numpy's and the interpreter's caches); the other half is timed.
    half = min(requests, len(users) // 2)
    warm, timed = ([pb.RecommendRequest(user_id=user, k=20) for user in part]
                   for part in (users[half:2 * half], users[:half]))
    spent, served = {"first": 0.0, "again": 0.0}, {"first": Counter(), "again": Counter()}
    with _service_over(redis_url, models_dir) as service:
        for request in warm:
            service.Recommend(request, None)  # an answered request never touches its context
        for start in range(0, half, IN_PROCESS_CHUNK):
            chunk = timed[start:start + IN_PROCESS_CHUNK]
            for run in ("first", "again"):
                began = time.thread_time()
                answers = [service.Recommend(request, None) for request in chunk]
                spent[run] += time.thread_time() - began
                served[run].update(answer.served_from for answer in answers)
    return {"requests": half} | {f"{run}_cpu_ms": round(1000 * spent[run] / max(1, half), 3) for run in spent} | {
        "served_from": {run: dict(counts) for run, counts in served.items()}}


@contextlib.contextmanager
def _service_over(redis_url: str, models_dir: Path, timeout_s: float = 120.0):
    """A ``RecommenderService`` over the store and registry as a worker builds it (without the log's
    writers), once it has a readable store and a model."""
    from serving.config import FunnelConfig
    from serving.live import LiveFeatures, ModelWatcher
    from serving.service import RecommenderService

    config = FunnelConfig()
    features, models = LiveFeatures(redis_url, config).start(), ModelWatcher(models_dir).start()
    try:
        deadline = time.monotonic() + timeout_s
        while not (features.healthy and models.model):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no readable store and model within {timeout_s:g} s for the in-process handler")
            time.sleep(0.2)
        yield RecommenderService(features, models, None, config)
    finally:
        features.stop()
        models.stop()


def _train_and_promote(stack, models: Path) -> tuple[list[str], dict]:
    """Backfill, train a small two-tower for one epoch, export it over the whole catalog, promote it;
    the users with history, and the promoted index's metadata (its calibration)."""
    import numpy as np

    from modelfiles.registry import ModelRegistry
    from training.data import retrieval_positives
    from training.replay import replay_log
    from training.two_tower.export import export_two_tower
    from training.two_tower.train import TwoTowerParams, TwoTowerRecommender
    from transforms.jobs import backfill

    backfill(stack.bootstrap, stack.redis_url, progress=False)
    interactions, catalog, _ = replay_log(stack.bootstrap)
    model = TwoTowerRecommender(TwoTowerParams(epochs=1, history_len=20))
    model.fit(retrieval_positives(interactions), catalog, events=interactions)
    users = sorted(set(interactions.user_ids.tolist()))
    sample = np.random.default_rng(0).choice(users, min(500, len(users)), replace=False).tolist()
    registry = ModelRegistry(models)
    version = registry.register(lambda d: export_two_tower(model, d, catalog.item_ids, sample), metadata={"model": "two_tower"})
    registry.promote(version.id)
    return users, version.metadata["index"]


def _measured(server_pid: int, run: Callable[[], Load]) -> tuple[Load, float]:
    """The load ``run`` measured, and the server's CPU milliseconds per request it answered: every
    worker's and the parent's CPU from /proc, which the machine's other work does not inflate as
    it does wall times."""
    before = process_tree_cpu_s(server_pid)
    load = run()
    used = process_tree_cpu_s(server_pid) - before
    return load, round(1000 * used / max(1, load.requests), 3)


def process_tree_cpu_s(root: int) -> float:
    """User and system CPU seconds of ``root`` and every live process under it."""
    # After the command name: state, ppid, pgrp, session, tty, tpgid, flags, four fault counts, utime, stime.
    stats = {pid: tail.split() for pid, tail in _stat_tails().items()}
    tree, grown = {root}, True
    while grown:
        below = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        tree, grown = tree | below, bool(below)
    ticks = sum(int(stats[pid][11]) + int(stats[pid][12]) for pid in tree if pid in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_tails() -> dict[int, str]:
    """``/proc/<pid>/stat`` after the command name, of every process."""
    tails = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                tails[int(entry.name)] = (entry / "stat").read_text().rsplit(") ", 1)[1]
    return tails


def handler_cpu(metrics_port: int) -> tuple[float, float]:
    """Recommend's handler CPU seconds and its requests so far, from the server's metrics, once the
    workers' queued updates have reached them."""
    time.sleep(2 * metrics.FLUSH_S)
    cpu = requests = 0.0
    for family in _scrape(metrics_port):
        for sample in family.samples:
            if sample.labels.get("rpc") != "Recommend":
                continue
            if sample.name == "kapparec_rpc_cpu_seconds_total":
                cpu += sample.value
            elif sample.name == "kapparec_requests_total":
                requests += sample.value
    return cpu, requests


def stage_cpu(metrics_port: int) -> dict[str, float]:
    """CPU seconds per request stage so far (``kapparec_stage_cpu_seconds``), once queued updates landed."""
    time.sleep(2 * metrics.FLUSH_S)
    return {sample.labels["stage"]: sample.value for family in _scrape(metrics_port) for sample in family.samples
            if sample.name == "kapparec_stage_cpu_seconds_total"}


def stage_cpu_ms(before: dict[str, float], after: dict[str, float], requests: float, server_ms: float,
                 handler_ms: float) -> dict[str, float]:
    """Each stage's CPU milliseconds per Recommend, and ``grpc``: the server's CPU outside the handler
    (gRPC's threads, hand-offs, background threads). ``sum`` adds them all, to hold against ``server_cpu_ms``."""
    per_request = {stage: round(1000 * (after[stage] - before.get(stage, 0.0)) / max(1.0, requests), 3)
                   for stage in sorted(after)}
    per_request["grpc"] = round(server_ms - handler_ms, 3)
    return per_request | {"sum": round(sum(per_request.values()), 3), "server_cpu_ms": server_ms}


def _handler_ms_per_request(before: tuple[float, float], after: tuple[float, float]) -> float:
    (cpu_before, requests_before), (cpu_after, requests_after) = before, after
    return round(1000 * (cpu_after - cpu_before) / max(1.0, requests_after - requests_before), 3)


def _scrape(metrics_port: int) -> list:
    from serving.scrape import scrape

    return scrape(f"http://localhost:{metrics_port}/metrics", timeout_s=10)


def stage_means(metrics_port: int) -> dict[str, float]:
    """Mean milliseconds per funnel stage over the whole run, from the server's own histograms."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in _scrape(metrics_port):
        if family.name != "kapparec_funnel_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name.endswith("_sum"):
                sums[stage] = sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = sample.value
    return {stage: round(1000 * sums[stage] / counts[stage], 3) for stage in sorted(sums) if counts.get(stage)}
