"""CPU of one user-tower call as serving makes it: ``tower_benchmark``.

Serving embeds one user per request with the numpy tower (``numpy_tower``), from ``(item, event
time)`` pairs and the log clock. Each history encoder is fitted for one epoch on a synthetic
log at the default widths (weights do not change the cost), exported, and called once per
query on full-length histories. Beside each figure, measured in the same run: the mean-pool
numpy tower (the cheapest tower, what serving ran before the order-aware encoders) and the
SavedModel's signature at batch 1 (what a version without the numpy weights costs). Each encoder
the default search tries is measured again with the most members it may keep.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from modelfiles.query import ENCODERS, MEAN

QUERIES = 2_000
HISTORY_LEN = 50


def cpu_ms_per_call(call: Callable[[int], object], calls: int) -> float:
    """Process CPU milliseconds per call, after a warm-up pass."""
    for n in range(min(calls, 50)):
        call(n)
    started = time.process_time()
    for n in range(calls):
        call(n)
    return (time.process_time() - started) * 1000 / calls


def saved_model_inputs(user: str, history: list[tuple[str, int]], clock_ms: int) -> dict[str, np.ndarray]:
    """What ``serving.model.ServingModel`` hands the SavedModel for one request."""
    from modelfiles.query import query_features, timed_rows

    items, ages = timed_rows([history], [clock_ms], HISTORY_LEN)
    return query_features(np.array([user], dtype=object), items, ages, ["eu"], ["tv"], [12])


def tower_benchmark(queries: int = QUERIES) -> dict:
    from modelfiles.two_tower import ExportedTwoTower
    from streams.schema import encode, parse_catalog, parse_interaction
    from streams.synthetic import SyntheticLog
    from training.data import Catalog, Interactions, retrieval_positives
    from training.two_tower.export import export_two_tower
    from training.two_tower.space import DEFAULT_SPACE, SPACES
    from training.two_tower.train import TwoTowerParams, TwoTowerRecommender

    log = SyntheticLog(users=200, items=2_000, events=40_000, seed=5)
    interactions = Interactions.from_events(parse_interaction(encode(e), offset=n) for n, e in enumerate(log.interactions()))
    catalog = Catalog.from_entries(parse_catalog(encode(c), offset=n) for n, c in enumerate(log.catalog()))
    positives = retrieval_positives(interactions)
    rng = np.random.default_rng(0)
    items = sorted(set(positives.item_ids.tolist()))
    clock_ms = int(interactions.event_times.max())
    histories = [[(str(item), clock_ms - int(age)) for item, age in
                  zip(rng.choice(items, HISTORY_LEN, replace=False), np.sort(rng.integers(0, 10**10, HISTORY_LEN)))]
                 for _ in range(queries)]
    users = rng.choice(sorted(set(positives.user_ids.tolist())), queries).tolist()
    space = SPACES[DEFAULT_SPACE]
    most = {encoder: max(space.members_for(encoder)) for encoder in space.encoder}
    result: dict = {"queries": queries, "history_len": HISTORY_LEN, "threads": "one Python thread per call",
                    "cpu_ms_per_call": {}, "most_members": most, "cpu_ms_per_call_most_members": {},
                    "load_average": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as scratch:
        for encoder, members in [(encoder, 1) for encoder in ENCODERS] + list(most.items()):
            params = TwoTowerParams(epochs=1, history_len=HISTORY_LEN, members=members)
            params = dataclasses.replace(params, shape=dataclasses.replace(params.shape, encoder=encoder))
            model = TwoTowerRecommender(params)
            model.fit(positives, catalog, events=interactions)
            directory = Path(scratch) / f"{encoder}-{members}"
            export_two_tower(model, directory, items, query_users=users[:50])
            exported = ExportedTwoTower(directory)
            tower = exported.numpy_tower
            figures = result["cpu_ms_per_call"] if members == 1 else result["cpu_ms_per_call_most_members"]
            figures[encoder] = round(cpu_ms_per_call(
                lambda n: tower.embed(users[n], histories[n], "eu", "tv", 12, clock_ms), queries), 4)
            if (encoder, members) == (MEAN, 1):
                result["saved_model_cpu_ms_per_call"] = round(cpu_ms_per_call(
                    lambda n: exported.embed_queries(saved_model_inputs(users[n], histories[n], clock_ms)), queries // 4), 4)
    mean_ms = result["cpu_ms_per_call"][MEAN]
    result["ratio_to_mean_pool"] = {encoder: round(ms / mean_ms, 2) for encoder, ms in result["cpu_ms_per_call"].items()}
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result
