"""``kapparec bench serving``: Recommend under 1, 8 and 32 concurrent clients beside the empty-RPC ceiling.

On a private broker, Redis and registry: a synthetic log with a large catalog is backfilled, a
two-tower trained on it is exported with its ScaNN index over the whole catalog and promoted,
and ``kapparec serve`` runs with one worker per core. The ceiling is an empty unary RPC (the
health Check) on the same server at the same concurrency: what the gRPC stack alone allows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.services import free_port
from serving.loadgen import EMPTY, RECOMMEND, run_load
from serving.server import wait_until_serving
from streams.synthetic import SyntheticLog
from infra.private import private_stack
from transforms.bench import produce_log


def serving_benchmark(items: int = 100_000, users: int = 10_000, events: int = 200_000,
                      clients: tuple[int, ...] = (1, 8, 32), seconds: float = 30.0, workers: int | None = None) -> dict:
    workers = workers or os.cpu_count() or 1
    with private_stack() as stack, tempfile.TemporaryDirectory(prefix="kapparec-bench-models-") as models:
        # Activity is heavy-tailed: twice as many synthetic users leaves at least ``users`` with history.
        produce_log(stack, SyntheticLog(users=users * 2, items=items, events=events, seed=0), partitions=4)
        known_users = _train_and_promote(stack, Path(models))
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
            result = {"items": items, "users": len(served_users), "workers": workers, "seconds": seconds,
                      "clients": {}, "ceiling_qps": {}, "ceiling": {}}
            for n in clients:
                load = run_load(address, RECOMMEND, n, seconds, served_users)
                ceiling = run_load(address, EMPTY, n, seconds, served_users)
                result["clients"][str(n)] = load.as_dict() | {"ratio_to_ceiling": round(load.qps / ceiling.qps, 3)}
                result["ceiling_qps"][str(n)] = ceiling.qps
                result["ceiling"][str(n)] = ceiling.as_dict()
            result["stage_mean_ms"] = stage_means(metrics_port)
            return result
        finally:
            server.terminate()
            server.wait(60)


def _train_and_promote(stack, models: Path) -> list[str]:
    """Backfill, train a small two-tower for one epoch, export it over the whole catalog, promote it."""
    import numpy as np

    from training.data import retrieval_positives
    from training.registry import ModelRegistry
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
    return users


def stage_means(metrics_port: int) -> dict[str, float]:
    """Mean milliseconds per funnel stage over the whole run, from the server's own histograms."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://localhost:{metrics_port}/metrics", timeout=10).read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "kapparec_funnel_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name.endswith("_sum"):
                sums[stage] = sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = sample.value
    return {stage: round(1000 * sums[stage] / counts[stage], 3) for stage in sorted(sums) if counts.get(stage)}
