"""Request-path reads at two log lengths: does a read cost more as the log grows? (``kapparec bench reads``)

Each read is timed over ``calls`` calls beside the same-run floor, a Redis PING (one round trip
with no work), and Redis's memory is taken after each backfill, in all and per feature.

A longer log here is a log that ran longer: the same users and items at the same rate of
events per day, so 5x the events span 5x the days. That is what "state must stop growing with
log length" is about; a log of 5x the events in the same days is 5x denser state instead.
"""

from __future__ import annotations

import time

import numpy as np

from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from infra.private import private_stack
from transforms.bench import produce_log
from transforms.jobs import backfill


def reads_benchmark(sizes: tuple[int, ...] = (1_000_000, 5_000_000), calls: int = 1000) -> dict:
    return {"calls": calls, "sizes": {str(events): _measure(events, calls) for events in sizes}}


# The population and rate of every log length: 1M events span 100 days, past every retention
# (the longest, affinity's, is 90 days).
USERS, ITEMS, EVENTS_PER_DAY = 20_000, 5_000, 10_000


def _measure(events: int, calls: int) -> dict:
    days = max(1, events // EVENTS_PER_DAY)
    log = SyntheticLog(users=USERS, items=ITEMS, events=events, seed=0, days=days)
    with private_stack() as stack:
        produce_log(stack, log, partitions=4)
        version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
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
        by_feature = {feature: {"keys": entry["keys"], "mb": round(entry["bytes"] / 2**20, 2)}
                      for feature, entry in RedisFeatureStore(stack.redis_url).stats(version).items()}
    return {"events": events, "days": days, "users": USERS, "items": ITEMS, **figures, "redis_used_memory_mb": round(memory / 2**20, 1),
            "features": by_feature}


def _percentiles(read, calls: int) -> dict:
    read()  # connections and caches warm, as on a serving process
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        read()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}
