"""Offline evaluation: rank every known item for each test user and count held-out items in the top K.

Per user, the user's own training items are excluded from the ranking (re-recommending them
is not retrieval), then

* Recall@K = hits in top K / min(K, |test|)  — reaches 1 when the top K is as good as it can be;
* NDCG@K   = DCG of the binary hits / the ideal DCG of min(K, |test|) hits;
* coverage = distinct items in anybody's top min(k_values) / |known_items|.

Users are scored in batches so memory is one batch × items; ties in score break towards the
lower item index, so a run is deterministic.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from kapparec.errors import KapparecError
from training.data import Catalog, Interactions
from training.recommender import Recommender
from training.split import Split, chronological_split

ScoreBatch = Callable[[list[str]], np.ndarray]  # users -> [len(users), len(known_items)] scores
Candidate = TypeVar("Candidate", bound=Hashable)


def evaluate(
    split: Split,
    models: Sequence[Recommender],
    k_values: Sequence[int] = (10, 50),
    batch_users: int = 256,
    progress: bool = True,
    fit: bool = True,
) -> dict:
    """Fit (unless ``fit=False``: already trained) and measure each model on ``split``."""
    results = {}
    for model in models:
        fit_s = None
        if fit:
            started = time.perf_counter()
            model.fit(split.train, split.catalog, events=split.events)
            fit_s = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        metrics = measure(
            split,
            lambda users, model=model: model.score(users, split.known_items),
            k_values=k_values,
            batch_users=batch_users,
            progress=progress,
            label=model.name,
        )
        results[model.name] = {**metrics, "fit_s": fit_s, "eval_s": round(time.perf_counter() - started, 3)}
    return {"protocol": protocol(split, k_values), "models": results}


def protocol(split: Split, k_values: Sequence[int]) -> dict:
    return {
        "split": "per-user chronological leave-last-out",
        "test_users": len(split.test),
        "holdout": split.holdout,
        "min_interactions": split.min_interactions,
        "train_interactions": len(split.train),
        "known_items": len(split.known_items),
        "cutoff_ms": split.cutoff_ms,
        "k_values": list(k_values),
        "training_items_excluded": True,
    }


def measure(split: Split, score_batch: ScoreBatch, k_values: Sequence[int] = (10, 50), **options) -> dict[str, float]:
    """Recall@K, NDCG@K for every K and coverage of one scoring function over the split's test users
    (``options``: ``measure_per_user``'s batch size, progress bar and label)."""
    per_user, coverage = measure_per_user(split, score_batch, k_values, **options)
    metrics = {name: round(float(values.mean()), 6) for name, values in per_user.items()}
    metrics["coverage"] = round(coverage, 6)
    return metrics


def measure_per_user(
    split: Split,
    score_batch: ScoreBatch,
    k_values: Sequence[int] = (10, 50),
    batch_users: int = 256,
    progress: bool = False,
    label: str = "model",
) -> tuple[dict[str, np.ndarray], float]:
    """Each metric per test user (users in sorted order), and the coverage: what ``measure`` averages."""
    if not split.test:
        raise KapparecError(
            f"nothing to evaluate: no user has at least {split.min_interactions} positive interactions"
        )
    users = sorted(split.test)
    columns = {item: i for i, item in enumerate(split.known_items)}
    seen = _columns_per_user(split, columns, set(users))
    k_max, k_coverage = max(k_values), min(k_values)
    rows: dict[str, list[np.ndarray]] = {f"{metric}@{k}": [] for k in k_values for metric in ("recall", "ndcg")}
    recommended: set[int] = set()
    batches = range(0, len(users), batch_users)
    for start in tqdm(batches, desc=f"eval {label}", unit="batch", disable=not progress):
        batch = users[start : start + batch_users]
        scores = np.array(score_batch(batch), dtype=np.float64)
        if scores.shape != (len(batch), len(columns)):
            raise KapparecError(f"{label} returned scores of shape {scores.shape}, expected {(len(batch), len(columns))}")
        if np.isnan(scores).any():
            raise KapparecError(f"{label} produced NaN scores")
        for row, user in enumerate(batch):
            scores[row, seen.get(user, [])] = -np.inf
        top = top_k(scores, k_max)
        ranked_finite = np.isfinite(np.take_along_axis(scores, top, axis=1))
        relevant = _relevance(batch, split.test, columns)
        hits = np.take_along_axis(relevant, top, axis=1) & ranked_finite
        n_relevant = np.array([len(split.test[user]) for user in batch])
        for k in k_values:
            rows[f"recall@{k}"].append(recall_at_k(hits, n_relevant, k))
            rows[f"ndcg@{k}"].append(ndcg_at_k(hits, n_relevant, k))
        recommended.update(top[:, :k_coverage][ranked_finite[:, :k_coverage]].tolist())
    return {name: np.concatenate(parts) for name, parts in rows.items()}, len(recommended) / len(columns)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores per row, best first; equal scores → lower index first."""
    k = min(k, scores.shape[1])
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def clearly_better(candidate: np.ndarray, kept: np.ndarray) -> bool:
    """The per-user metric ``candidate`` beats ``kept`` by more than one standard error of the mean difference."""
    difference = candidate - kept
    return bool(difference.mean() > difference.std(ddof=1) / np.sqrt(len(difference)))


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per row: hits in the first k ranks / min(k, number of relevant items)."""
    return hits[:, :k].sum(axis=1) / np.minimum(k, n_relevant)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per row: binary-relevance DCG of the first k ranks / the DCG of min(k, relevant) hits at the top."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(k, n_relevant) - 1]
    return dcg / ideal


def _columns_per_user(split: Split, columns: dict[str, int], users: set[str]) -> dict[str, list[int]]:
    """Each test user's training items as ranking columns (the items excluded from their ranking)."""
    seen: dict[str, list[int]] = {}
    for user, item in zip(split.train.user_ids, split.train.item_ids):
        if user in users:
            seen.setdefault(user, []).append(columns[item])
    return seen


def _relevance(batch: list[str], test: dict[str, list[str]], columns: dict[str, int]) -> np.ndarray:
    """Boolean [len(batch), items]: the user's held-out items (those outside the universe cannot be hit)."""
    relevant = np.zeros((len(batch), len(columns)), dtype=bool)
    for row, user in enumerate(batch):
        relevant[row, [columns[item] for item in test[user] if item in columns]] = True
    return relevant


def choose_on_validation(
    train: Interactions,
    catalog: Catalog | None,
    candidates: Sequence[Candidate],
    prepare: Callable[[Split], Callable[[Candidate], ScoreBatch]],
    *,
    min_interactions: int = 20,
    holdout: int = 10,
    metric: str = "recall@10",
) -> tuple[Candidate, dict[Candidate, float]]:
    """Pick the hyper-parameter with the best ``metric`` on a validation split carved from ``train``.

    The validation split applies the evaluation protocol again to the training data (each
    eligible user's last ``holdout`` training positives), so the test set is never looked at.
    ``prepare(split)`` does the work shared by all candidates once and returns, per candidate,
    a scoring function over ``split.known_items``. Ties go to the earlier candidate; with no
    eligible validation user the first candidate is returned unmeasured.
    """
    if len(candidates) == 1:
        return candidates[0], {}
    split = chronological_split(train, min_interactions, holdout, catalog)
    if not split.test:
        return candidates[0], {}
    scorer_for = prepare(split)
    results = {c: measure(split, scorer_for(c), k_values=(_k_of(metric),))[metric] for c in candidates}
    return max(candidates, key=lambda c: results[c]), results


def _k_of(metric: str) -> int:
    return int(metric.split("@")[1])
