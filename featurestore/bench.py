"""Request-path reads at two log lengths: does a read cost more as the log grows? (``kapparec bench reads``)

Each read is timed over ``calls`` calls beside the same-run floor, a Redis PING (one round trip
with no work), and Redis's memory is taken after each backfill.
"""

from __future__ import annotations

import time

import numpy as np

from featurestore.reader import FeatureReader
from streams.synthetic import SyntheticLog
from infra.private import private_stack
from transforms.bench import produce_log
from transforms.jobs import backfill


def reads_benchmark(sizes: tuple[int, ...] = (1_000_000, 5_000_000), calls: int = 1000) -> dict:
    return {"calls": calls, "sizes": {str(events): _measure(events, calls) for events in sizes}}


def _measure(events: int, calls: int) -> dict:
    log = SyntheticLog(users=max(100, events // 50), items=5_000, events=events, seed=0)
    with private_stack() as stack:
        produce_log(stack, log, partitions=4)
        backfill(stack.bootstrap, stack.redis_url, progress=False)
        reader = FeatureReader(stack.redis_url)
        item = reader.trending(n=1)[0][0]
        reads = {
            "ceiling_ping": reader.client.ping,
            "trending_global": lambda: reader.trending("global", 20),
            "trending_region": lambda: reader.trending(f"region:{log.regions[0]}", 20),
            "similar": lambda: reader.similar(item, 20),
            "category_affinity": lambda: reader.category_affinity(log.user_id(0)),
        }
        figures = {name: _percentiles(read, calls) for name, read in reads.items()}
        memory = reader.client.info("memory")["used_memory"]
    return {"events": events, **figures, "redis_used_memory_mb": round(memory / 2**20, 1)}


def _percentiles(read, calls: int) -> dict:
    read()  # connections and caches warm, as on a serving process
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        read()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}
