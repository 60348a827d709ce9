"""ScaNN against exact search, one thread, on synthetic clustered embeddings: ``index_benchmark``.

The catalog imitates what a trained two-tower model produces rather than uniform noise, which
is the worst case for every ANN method and says nothing about serving: item vectors are
unit-normalised points around topic centres (genres, series, a catalogue's niches), each at a
cosine of about 0.7 to its centre (as much isotropic noise as signal). Queries (user vectors)
mix one to three topics the user likes, with noise, as a user tower's output does. The figures
depend on that structure; ``catalog_structure`` in the result records it.

Both sides run single-threaded and answer one query at a time, as online serving does: the
brute-force ceiling is a numpy matmul + argpartition per query with BLAS pinned to one thread,
against ScaNN's single-query ``search`` (``scann_batched_qps`` adds its one-thread batched
path). Without threadpoolctl, ``index_benchmark`` measures in a child process whose environment pins
BLAS to one thread before numpy loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Callable

import numpy as np

from kapparec.errors import KapparecError

ITEMS_PER_TOPIC = 1_000
TOPIC_COSINE = 0.7
K = 10

SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def threadpool_limiter():
    """threadpoolctl's limiter if installed: it can pin BLAS threads after numpy is loaded."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def around(centres: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors whose expected cosine with their (unit) centre is ``cosine``."""
    dim = centres.shape[1]
    noise_norm = np.sqrt(1.0 / cosine**2 - 1.0)
    return unit_rows(centres + rng.normal(scale=noise_norm / np.sqrt(dim), size=centres.shape))


def clustered_catalog(num_items: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(item embeddings [n, dim], topic centres [topics, dim]); topics = n / ITEMS_PER_TOPIC (≥ 16)."""
    topics = unit_rows(rng.normal(size=(max(16, num_items // ITEMS_PER_TOPIC), dim)))
    items = np.empty((num_items, dim), dtype=np.float32)
    for start in range(0, num_items, 100_000):  # bounded temporaries at 1M items
        stop = min(num_items, start + 100_000)
        items[start:stop] = around(topics[rng.integers(0, len(topics), stop - start)], TOPIC_COSINE, rng)
    return items, topics


def user_queries(topics: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Each user mixes 1-3 topics with random weights, then noise: a user-tower-like query."""
    mixes = np.zeros((count, len(topics)), dtype=np.float32)
    for row in range(count):
        liked = rng.choice(len(topics), size=rng.integers(1, 4), replace=False)
        mixes[row, liked] = rng.dirichlet(np.ones(len(liked)))
    return around(unit_rows(mixes @ topics), TOPIC_COSINE, rng)


def per_query_qps(search_one: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Queries/s answering one query at a time, as an online request is served."""
    start = time.perf_counter()
    for query in queries:
        search_one(query)
    return len(queries) / (time.perf_counter() - start)


def exact_top_k(items: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """The ceiling: one matmul over the catalog and an argpartition, per query."""
    return np.argpartition(-(items @ query), k - 1)[:k]


def measure_size(num_items: int, dim: int, queries: int, rng: np.random.Generator) -> dict:
    from modelfiles.index import BruteForceIndex, ScannIndex, ScannParams, calibrated, recall_against_exact

    items, topics = clustered_catalog(num_items, dim, rng)
    query_batch = user_queries(topics, queries, rng)
    ids = np.arange(num_items).astype(str)
    exact = BruteForceIndex(items, ids)
    start = time.perf_counter()
    index = ScannIndex(items, ids, ScannParams.for_catalog(num_items, K))
    build_s = time.perf_counter() - start
    # Calibrated as export calibrates serving's index, on other users' queries than those measured.
    index, calibration = calibrated(index, exact, user_queries(topics, queries, rng), K)
    index.search(query_batch[:10], K)  # warm caches before timing either side
    brute_qps = per_query_qps(lambda q: exact_top_k(items, q), query_batch)
    scann_qps = per_query_qps(lambda q: index.search(q, K), query_batch)
    start = time.perf_counter()
    index.search(query_batch, K)
    scann_batched_qps = queries / (time.perf_counter() - start)
    recall = recall_against_exact(index, exact, query_batch, K)
    return {
        "build_s": round(build_s, 2),
        "scann_qps": round(scann_qps, 1),
        "scann_batched_qps": round(scann_batched_qps, 1),
        "brute_qps": round(brute_qps, 1),
        "speedup": round(scann_qps / brute_qps, 2),
        f"recall@{K}": round(recall, 4),
        "queries": queries,
        "params": asdict(index.params),
        "calibration": calibration,
        "recall_vs_qps": recall_vs_qps(index, exact, query_batch),
    }


# Shares of the leaves searched per query, around where serving starts calibrating (``ScannParams.for_catalog``).
LEAF_SHARES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def recall_vs_qps(index, exact, queries: np.ndarray) -> list[dict]:
    """Recall@10 and single-query queries/s at several numbers of leaves searched, serving's own
    among them (``serving``: true), so the report can show where serving sits on the curve."""
    from modelfiles.index import recall_against_exact

    params = index.params
    if params.num_leaves == 0:
        return []
    leaf_counts = sorted({max(1, round(share * params.num_leaves)) for share in LEAF_SHARES} | {params.leaves_to_search})
    curve = []
    for leaves in leaf_counts:
        variant = index.searching(leaves)
        variant.search(queries[:10], K)  # warm, as before the main figures
        curve.append({"leaves": leaves, "serving": leaves == params.leaves_to_search,
                      "qps": round(per_query_qps(lambda q: variant.search(q, K), queries), 1),
                      f"recall@{K}": round(recall_against_exact(variant, exact, queries, K), 4)})
    return curve


def index_benchmark(sizes=(100_000, 1_000_000), dim: int = 64, queries: int = 1_000, seed: int = 0) -> dict:
    """Per catalog size: ScaNN build time, single-thread queries/s against exact search, recall@10.

    BLAS is pinned to one thread with threadpoolctl when installed; otherwise the measurement
    runs in a child process whose environment sets the thread count before numpy loads.
    """
    limiter = threadpool_limiter()
    if limiter is not None:
        with limiter(1):
            return measure(sizes, dim, queries, seed)
    command = [sys.executable, "-m", "training.bench", json.dumps({"sizes": list(sizes), "dim": dim, "queries": queries, "seed": seed})]
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **SINGLE_THREAD_ENV}, check=False)
    if child.returncode != 0:
        raise KapparecError(f"index benchmark process failed with exit code {child.returncode} (its stderr is above)")
    return json.loads(child.stdout)


def measure(sizes, dim: int, queries: int, seed: int) -> dict:
    from modelfiles.index import scann_module

    scann_module()  # import ScaNN (and TensorFlow) before any build is timed
    rng = np.random.default_rng(seed)
    results = {}
    for num_items in sizes:
        print(f"index benchmark: {num_items:,} items x {dim} dims ...", file=sys.stderr, flush=True)
        results[str(num_items)] = measure_size(num_items, dim, queries, rng)
    return {
        "dim": dim,
        "k": K,
        "seed": seed,
        "threads": 1,
        "catalog_structure": {
            "items_per_topic": ITEMS_PER_TOPIC,
            "item_topic_cosine": TOPIC_COSINE,
            "query_topics": "1-3, Dirichlet weights",
            "normalised": True,
        },
        "sizes": results,
    }


if __name__ == "__main__":  # the single-thread child of index_benchmark
    options = json.loads(sys.argv[1])
    print(json.dumps(measure(options["sizes"], options["dim"], options["queries"], options["seed"])))
