"""What the item-item baselines share: one hyper-parameter chosen on validation, then an
item-item weight matrix W fitted on all training data, scoring a user as X_u W."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from training.data import Catalog, Interactions
from training.evaluate import ScoreBatch, choose_on_validation
from training.recommender import UserItemMatrix
from training.split import Split


class ItemItemModel:
    """Subclasses set ``name`` and define ``validation_scorers`` and ``item_weights``."""

    name: str

    def __init__(self, candidates: Sequence, min_interactions: int = 20, holdout: int = 10):
        self.candidates = tuple(candidates)
        self.min_interactions, self.holdout = min_interactions, holdout
        self.chosen = None
        self.validation: dict = {}

    @staticmethod
    def validation_scorers(split: Split) -> Callable[[object], ScoreBatch]:
        raise NotImplementedError

    @staticmethod
    def item_weights(matrix: UserItemMatrix, chosen) -> np.ndarray:
        raise NotImplementedError

    def fit(self, train: Interactions, catalog: Catalog | None = None, events: Interactions | None = None) -> None:
        self.chosen, self.validation = choose_on_validation(
            train, catalog, self.candidates, self.validation_scorers,
            min_interactions=self.min_interactions, holdout=self.holdout,
        )
        self._matrix = UserItemMatrix(train)
        self._weights = self.item_weights(self._matrix, self.chosen)

    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self._matrix.to_items(self._matrix.times(users, self._weights), items)
