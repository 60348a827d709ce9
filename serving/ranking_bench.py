"""The ranking stage's CPU per request: the learned ranker beside the documented blend (its ceiling).

In process and on one thread: a pool shaped like a request's (100 two-tower, 60 co-occurrence and
50 each of trending, popular and new-item candidates, overlapping) for a user with 50 history
items, over a 100,000-item catalog. Both rank the whole pool.
"""

from __future__ import annotations

import time

import numpy as np

from featurestore.reader import HistoryEntry, UserFeatures
from modelfiles.ranker import LearnedRanker
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.ranker import FEATURES, for_request
from serving.ranking import ranking
from serving.request import Candidate, Pool
from serving.snapshot import LIST_LENGTH, Snapshot

POOL = (("two_tower", 100), ("co_occurrence", 60), ("trending", 50), ("popular", 50), ("new_item", 50))


def ranking_benchmark(items: int = 100_000, repeats: int = 500, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = [f"i{n}" for n in range(items)]
    catalog = {item: {"categories": [f"c{n % 20}", f"c{n * 7 % 20}"], "created_at": n} for n, item in enumerate(ids)}
    popular = [(item, float(LIST_LENGTH - n)) for n, item in enumerate(ids[:LIST_LENGTH])]
    snapshot = Snapshot("bench", items, catalog, {}, {"global": popular}, [])
    user = UserFeatures([HistoryEntry(item, "view", n) for n, item in enumerate(ids[:50])], {"region": "", "device": ""},
                        set(ids[:50]), set(), [])
    # Drawn from the first few thousand items, so the sources overlap as they do for a real user.
    candidates = [Candidate(str(item), source, rank, score=float(rng.normal()))
                  for source, n in POOL for rank, item in enumerate(rng.choice(ids[:3000], n, replace=False))]
    columns = CatalogArrays.of(catalog)
    pool = Pool.of_candidates(candidates, columns.rows([c.item_id for c in candidates]))
    ranker = LearnedRanker(FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), rng.normal(size=len(FEATURES)))
    config = FunnelConfig()
    learned = for_request(ranker, user, snapshot, "")

    runs = {"blend": lambda: ranking(pool, columns, config),
            "learned": lambda: ranking(pool, columns, config, learned=learned)}
    cpu_ms = {}
    for name, run in runs.items():
        run()  # the snapshot's derived catalog columns are built once, outside the timing
        started = time.process_time()
        for _ in range(repeats):
            run()
        cpu_ms[name] = (time.process_time() - started) / repeats * 1e3
    return {"candidates": len(pool), "distinct_items": len(set(pool.ids)), "catalog_items": items,
            "repeats": repeats, "cpu_ms_per_ranking": {name: round(ms, 4) for name, ms in cpu_ms.items()},
            "ratio_to_blend": round(cpu_ms["learned"] / cpu_ms["blend"], 2)}
