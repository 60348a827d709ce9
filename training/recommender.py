"""What every model and baseline implements, and the user–item matrix the matrix baselines share.

The evaluation only ever calls ``fit`` then ``score``; a model ranks by its scores, higher is
better, and any item it has never seen must still get a (finite) score. ``fit`` gets the
positives to learn from and, as ``events``, the whole replayed log of the training part, for
models whose inputs the feature store defines over raw records (the two-tower's history).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from training.data import Catalog, Interactions


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, train: Interactions, catalog: Catalog | None, events: Interactions | None = None) -> None: ...

    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """[len(users), len(items)] float32, higher = better."""
        ...


class UserItemMatrix:
    """The binary user × item matrix X of the training data, stored sparse (one index list per user).

    Columns are the items seen in training, sorted; dense rows are built only for the users a
    caller asks about, so memory stays at one batch of users × items.
    """

    def __init__(self, train: Interactions):
        self.items = np.unique(train.item_ids).astype(object)
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.item_codes = np.searchsorted(self.items, train.item_ids)
        self.users, user_rows = np.unique(train.user_ids, return_inverse=True)
        self.user_index = {user: u for u, user in enumerate(self.users)}
        order = np.argsort(user_rows, kind="stable")
        self._indices = self.item_codes[order]
        self._indptr = np.r_[0, np.cumsum(np.bincount(user_rows, minlength=len(self.users)))]

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_indices(self, user: str) -> np.ndarray:
        """Columns of the user's training items (empty for a user unseen in training)."""
        u = self.user_index.get(user)
        return self._indices[self._indptr[u] : self._indptr[u + 1]] if u is not None else self._indices[:0]

    def rows(self, users: Sequence[str], dtype=np.float32) -> np.ndarray:
        """Dense binary rows of X for ``users``; a user unseen in training gets a zero row."""
        dense = np.zeros((len(users), self.n_items), dtype=dtype)
        for row, user in enumerate(users):
            dense[row, self.item_indices(user)] = 1
        return dense

    def times(self, users: Sequence[str], weights: np.ndarray) -> np.ndarray:
        """X_users @ weights as a sum of the weight rows of each user's items.

        X is sparse (a user has a few hundred of thousands of items), so summing those rows
        costs a small fraction of a dense product with the [items, items] weights.
        """
        out = np.zeros((len(users), weights.shape[1]), dtype=weights.dtype)
        for row, user in enumerate(users):
            out[row] = weights[self.item_indices(user)].sum(axis=0)
        return out

    def gram(self, batch_users: int = 1024) -> np.ndarray:
        """X^T X (co-occurrence counts) in float64, accumulated over batches of users.

        Each batch is multiplied in float32 — exact for counts below 2**24 and about twice as
        fast as float64 — then added to the float64 total.
        """
        gram = np.zeros((self.n_items, self.n_items))
        for start in range(0, len(self.users), batch_users):
            block = self.rows(self.users[start : start + batch_users])
            gram += block.T @ block
        return gram

    def to_items(self, scores: np.ndarray, items: Sequence[str], fill: float = 0.0) -> np.ndarray:
        """Reorder column scores into the requested ``items`` order; items not in training get ``fill``."""
        columns = np.array([self.item_index.get(item, -1) for item in items], dtype=np.int64)
        out = np.full((scores.shape[0], len(items)), fill, dtype=np.float32)
        known = columns >= 0
        out[:, known] = scores[:, columns[known]]
        return out
