"""EASE (Steck, 2019): a closed-form item-item linear autoencoder with a zero diagonal.

P = (X^T X + λI)^-1,  B = I - P · diag(1/diag(P))  (so diag(B) = 0),  score = X_u B.

Only items seen in training get columns; any other item scores 0. The inverse is taken in
float64 (the Gram matrix of thousands of items is too ill-conditioned for float32).

λ is chosen on a validation split carved from the training data. One eigendecomposition
G = V diag(w) V^T of the validation Gram matrix serves every candidate: for each λ,
X_u P = (X_u V) diag(1/(w+λ)) V^T and diag(P) = (V∘V) · 1/(w+λ), so trying another λ costs
a product with the validation users' rows rather than another inverse.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from training.baselines.linear import ItemItemModel
from training.evaluate import ScoreBatch
from training.recommender import UserItemMatrix
from training.split import Split

DEFAULT_LAMBDAS: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


class EASE(ItemItemModel):
    name = "ease"

    def __init__(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS, min_interactions: int = 20, holdout: int = 10):
        super().__init__(lambdas, min_interactions, holdout)

    @property
    def l2(self) -> float | None:
        """The chosen λ."""
        return self.chosen

    @staticmethod
    def validation_scorers(split: Split) -> Callable[[float], ScoreBatch]:
        return validation_scorers(split)

    @staticmethod
    def item_weights(matrix: UserItemMatrix, l2: float) -> np.ndarray:
        return ease_weights(matrix.gram(), l2).astype(np.float32)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P diag(1/diag(P)) with P = (G + λI)^-1, in float64."""
    regularised = gram.copy()
    regularised[np.diag_indices_from(regularised)] += l2
    inverse = np.linalg.inv(regularised)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def validation_scorers(split: Split) -> Callable[[float], ScoreBatch]:
    """One eigendecomposition of the validation Gram matrix; a scorer per λ (see the module docstring)."""
    matrix = UserItemMatrix(split.train)
    eigenvalues, eigenvectors = np.linalg.eigh(matrix.gram())
    users = sorted(split.test)
    rows = matrix.rows(users, dtype=np.float64)
    projected = rows @ eigenvectors  # X_u V, shared by every λ
    position = {user: i for i, user in enumerate(users)}

    def scorer(l2: float) -> ScoreBatch:
        shrink = 1.0 / (eigenvalues + l2)
        times_inverse = (projected * shrink) @ eigenvectors.T  # X_u P
        diagonal = (eigenvectors**2) @ shrink  # diag(P)
        scores = rows - times_inverse / diagonal  # X_u B; the X_u term cancels B's diagonal exactly
        return lambda batch: matrix.to_items(scores[[position[user] for user in batch]], split.known_items)

    return scorer
