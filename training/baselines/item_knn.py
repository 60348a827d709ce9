"""Item-based k-nearest neighbours (Deshpande & Karypis, 2004) on cosine co-occurrence.

S[i, j] = |users of i ∩ users of j| / sqrt(|users of i| · |users of j|), with S[i, i] = 0;
each item keeps only its ``k`` most similar items (its row of S), and a user's score for j
is the sum of S[i, j] over the user's training items i: X_u S. ``k`` is chosen on a
validation split carved from the training data; ``None`` keeps every neighbour.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from training.baselines.linear import ItemItemModel
from training.evaluate import ScoreBatch
from training.recommender import UserItemMatrix
from training.split import Split

DEFAULT_NEIGHBOURS: tuple[int | None, ...] = (20, 50, 100, 200, 500, None)


class ItemKNN(ItemItemModel):
    name = "item_knn"

    def __init__(
        self, neighbours: Sequence[int | None] = DEFAULT_NEIGHBOURS, min_interactions: int = 20, holdout: int = 10
    ):
        super().__init__(neighbours, min_interactions, holdout)

    @property
    def neighbours(self) -> int | None:
        """The chosen neighbourhood size (None: every neighbour)."""
        return self.chosen

    @staticmethod
    def validation_scorers(split: Split) -> Callable[[int | None], ScoreBatch]:
        return validation_scorers(split)

    @staticmethod
    def item_weights(matrix: UserItemMatrix, neighbours: int | None) -> np.ndarray:
        return keep_top_neighbours(cosine_similarity(matrix), neighbours)


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
