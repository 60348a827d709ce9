"""Item-based k-nearest neighbours (Deshpande & Karypis, 2004) on cosine co-occurrence.

S[i, j] = |users of i ∩ users of j| / sqrt(|users of i| · |users of j|), with S[i, i] = 0;
each item keeps only its ``k`` most similar items (its row of S), and a user's score for j
is the sum of S[i, j] over the user's training items i: X_u S. ``k`` is chosen on a
validation split carved from the training data; ``None`` keeps every neighbour.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from training.data import Catalog, Interactions
from training.evaluate import ScoreBatch, choose_on_validation
from training.recommender import UserItemMatrix
from training.split import Split

DEFAULT_NEIGHBOURS: tuple[int | None, ...] = (20, 50, 100, 200, 500, None)


class ItemKNN:
    name = "item_knn"

    def __init__(
        self, neighbours: Sequence[int | None] = DEFAULT_NEIGHBOURS, min_interactions: int = 20, holdout: int = 10
    ):
        self.candidates = tuple(neighbours)
        self.min_interactions, self.holdout = min_interactions, holdout
        self.neighbours: int | None = None
        self.validation: dict = {}

    def fit(self, train: Interactions, catalog: Catalog | None = None) -> None:
        self.neighbours, self.validation = choose_on_validation(
            train,
            catalog,
            self.candidates,
            validation_scorers,
            min_interactions=self.min_interactions,
            holdout=self.holdout,
        )
        self._matrix = UserItemMatrix(train)
        self._similarity = keep_top_neighbours(cosine_similarity(self._matrix), self.neighbours)

    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self._matrix.to_items(self._matrix.times(users, self._similarity), items)


def validation_scorers(split: Split) -> Callable[[int | None], ScoreBatch]:
    """The similarity of the validation training data once; a scorer per neighbourhood size."""
    matrix = UserItemMatrix(split.train)
    similarity = cosine_similarity(matrix)

    def scorer(k: int | None) -> ScoreBatch:
        pruned = keep_top_neighbours(similarity, k)
        return lambda users: matrix.to_items(matrix.times(users, pruned), split.known_items)

    return scorer


def cosine_similarity(matrix: UserItemMatrix) -> np.ndarray:
    """Cosine of the binary item columns of X, float32, zero diagonal."""
    gram = matrix.gram()
    norms = np.sqrt(np.diag(gram))
    similarity = (gram / np.outer(norms, norms)).astype(np.float32)  # every training item has a norm ≥ 1
    np.fill_diagonal(similarity, 0.0)
    return similarity


def keep_top_neighbours(similarity: np.ndarray, k: int | None) -> np.ndarray:
    """A copy of ``similarity`` keeping only the ``k`` largest entries of each row (all if None)."""
    if k is None or k >= similarity.shape[1]:
        return similarity
    keep = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    pruned = np.zeros_like(similarity)
    np.put_along_axis(pruned, keep, np.take_along_axis(similarity, keep, axis=1), axis=1)
    return pruned
