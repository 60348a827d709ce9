"""Fit the funnel's learned ranker (``modelfiles.ranker``) on a replay's validation split.

The examples are the funnel's own candidates for each validation user, built by the serving
code over the validation replay (features and model of the validation split's training part),
labelled by whether the item is among that user's validation held-out items. The test split
never reaches this module: its inputs are the validation split and the funnel over its replay.

- **The model** is linear in the features and fitted listwise (``fit``).
- **Regularisation** is chosen by cross-fitting: the validation users fall into two halves, a
  ranker fitted on one half ranks the other, and the L2 strength with the best out-of-fold
  recall@10 wins.
- **Adoption:** the two out-of-fold rankers then run inside the real funnel, each on the half it
  never saw, and the learned ranker is adopted only when its per-user validation recall@10 beats
  the chosen blend's by more than one standard error of the paired difference (the rule the blend
  search keeps changes by). The adopted ranker is refitted on every validation user.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from modelfiles.ranker import LearnedRanker
from training.evaluate import clearly_better, measure_per_user
from training.split import Split

if TYPE_CHECKING:  # training.funnel_eval runs this module's search
    from training.funnel_eval import FunnelConfig, OfflineFunnel

# L2 strengths tried (on standardised features, against a likelihood summed over every held-out positive).
L2_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
NEWTON_STEPS = 50
K = 10
METRIC = f"recall@{K}"  # what the blend search and the adoption rule compare


@dataclass(frozen=True)
class Examples:
    """Per validation user (sorted): their unblocked candidates' feature rows and labels."""

    names: tuple[str, ...]  # the features, the columns of each user's rows (the serving funnel's)
    users: list[str]
    items: list[list[str]]  # the item of each feature row
    features: list[np.ndarray]
    labels: list[np.ndarray]  # True: the item is among the user's validation held-out items
    n_relevant: np.ndarray  # each user's held-out count (recall's denominator, as in ``training.evaluate``)


def collect_examples(funnel: OfflineFunnel, validation: Split, config: FunnelConfig) -> Examples:
    """The candidates the funnel under ``config`` proposes to each validation user when every source is
    generated, as for a model that carries a ranker (the blend's weights themselves play no part)."""
    serving = funnel.funnel(config.every_source())
    users, items, features, labels = sorted(validation.test), [], [], []
    for user in tqdm(users, desc="ranker examples", unit="user"):
        stored, rows = serving.ranker_features(funnel.query(user, K))
        if rows is None:  # the blend ranks users the store does not know
            items.append([])
            features.append(np.zeros((0, len(serving.RANKER_FEATURES))))
            labels.append(np.zeros(0, dtype=bool))
            continue
        blocked, held_out = stored.seen | stored.disliked, set(validation.test[user])
        kept = [n for n, item in enumerate(rows.items) if item not in blocked]  # never on a page
        items.append([rows.items[n] for n in kept])
        features.append(rows.matrix[kept])
        labels.append(np.array([item in held_out for item in items[-1]], dtype=bool))
    return Examples(serving.RANKER_FEATURES, users, items, features, labels,
                    np.array([len(validation.test[user]) for user in users]))


def fit(names: tuple[str, ...], features: list[np.ndarray], labels: list[np.ndarray], l2: float) -> LearnedRanker:
    """A linear scorer fitted listwise: per user, a softmax over their candidates' scores, whose
    likelihood of their held-out items is maximised (L2-penalised, on standardised features, by
    Newton's method). Listwise, because only the order within one user's page matters: a feature
    that moves every candidate of a user alike (how many positives they have) teaches it nothing."""
    groups = [n for n, found in enumerate(labels) if found.any()]  # a user with no positive adds nothing
    rows = np.vstack([features[n] for n in groups])
    target = np.concatenate([labels[n] for n in groups]).astype(np.float64)
    sizes = np.array([len(labels[n]) for n in groups])
    starts, user_of = np.r_[0, np.cumsum(sizes)[:-1]], np.repeat(np.arange(len(groups)), sizes)
    positives = np.add.reduceat(target, starts)
    mean, scale = rows.mean(axis=0), rows.std(axis=0)
    scale[scale == 0] = 1.0
    design = (rows - mean) / scale
    weights = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        scores = design @ weights
        exp = np.exp(scores - np.maximum.reduceat(scores, starts)[user_of])
        probability = exp / np.add.reduceat(exp, starts)[user_of]
        expected = positives[user_of] * probability  # each candidate's expected share of the user's positives
        gradient = design.T @ (expected - target) + l2 * weights
        centre = np.add.reduceat(probability[:, None] * design, starts)  # per user, the softmax-weighted mean row
        hessian = (design.T * expected) @ design - (centre.T * positives) @ centre + l2 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-7:
            break
    return LearnedRanker(names, mean, scale, weights)


def candidate_recall(ranker: LearnedRanker, examples: Examples, users: np.ndarray) -> np.ndarray:
    """Recall@10 of ``users`` (indices into ``examples``) when their candidates are ordered by ``ranker``."""
    found = []
    for n in users:
        labels = examples.labels[n]
        top = np.argsort(-ranker.scores(examples.features[n]), kind="stable")[:K] if len(labels) else []
        found.append(labels[top].sum() / min(K, examples.n_relevant[n]))
    return np.array(found)


def choose_ranker(funnel: OfflineFunnel, validation: Split, config: FunnelConfig, page_size: int,
                  blend: np.ndarray, seed: int) -> tuple[LearnedRanker | None, dict]:
    """The learned ranker if it clearly beats ``blend`` (the chosen blend's per-user validation
    ``METRIC``, users sorted) out of fold, refitted on every validation user; else None. And the record."""
    started = time.perf_counter()
    examples = collect_examples(funnel, validation, config)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(examples.users)), 2)
    if any(not any(examples.labels[n].any() for n in half) for half in halves):
        return None, {"skipped": "a half of the validation users has none of its held-out items among its candidates: "
                                 "nothing to fit or to judge a ranker by, so the blend ranks",
                      "validation_users": len(examples.users), "adopted": False}
    trials, best = [], None
    for l2 in L2_GRID:
        rankers = [fit(examples.names, *_grouped(examples, halves[1 - n]), l2) for n in range(2)]  # rankers[n] has not seen halves[n]
        out_of_fold = np.concatenate([candidate_recall(rankers[n], examples, halves[n]) for n in range(2)])
        trials.append({"l2": l2, f"out_of_fold_candidate_{METRIC}": round(float(out_of_fold.mean()), 6)})
        if best is None or out_of_fold.mean() > best[0]:
            best = (float(out_of_fold.mean()), l2, rankers)
    _, l2, rankers = best
    fold_of = {examples.users[user]: n for n in range(2) for user in halves[n]}
    models = [funnel.model.with_ranker(ranker) for ranker in rankers]
    scorer = funnel.scorer(config, page_size, model_of=lambda user: models[fold_of[user]])
    per_user, _ = measure_per_user(validation, scorer, k_values=(K,))
    learned = per_user[METRIC]
    adopted = clearly_better(learned, blend)
    positives = sum(int(labels.sum()) for labels in examples.labels)
    record = {
        "model": "a linear scorer over the serving funnel's ranker features fitted listwise (a softmax over each user's candidates), "
                 "L2 chosen by two-fold cross-fitting over the validation users; adopted only when its out-of-fold funnel beats the chosen blend by more than one "
                 "standard error of the paired per-user difference",
        "validation_users": len(examples.users),
        "examples": sum(len(labels) for labels in examples.labels),
        "positives": positives,
        "trials": trials,
        "l2": l2,
        f"validation_{METRIC}": {"learned_out_of_fold": round(float(learned.mean()), 6),
                                 "blend": round(float(blend.mean()), 6),
                                 "paired_se": round(float((learned - blend).std(ddof=1) / np.sqrt(len(learned))), 6)},
        "adopted": adopted,
    }
    final = None
    if adopted:
        fitted = fit(examples.names, examples.features, examples.labels, l2)
        record["coefficients"] = dict(zip(examples.names, np.round(fitted.coef, 4).tolist()))
        final = dataclasses.replace(fitted, record=record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return final, record


def _grouped(examples: Examples, users: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [examples.features[n] for n in users], [examples.labels[n] for n in users]
