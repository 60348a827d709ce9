"""Strong non-neural baselines the two-tower must beat, each a ``training.recommender.Recommender``."""

from __future__ import annotations

from typing import Callable

from training.baselines.ease import EASE
from training.baselines.item_knn import ItemKNN
from training.baselines.popularity import Popularity
from training.recommender import Recommender

# name -> factory with validation-chosen defaults, for ``kapparec eval --baselines``.
BASELINES: dict[str, Callable[[], Recommender]] = {
    Popularity.name: Popularity,
    ItemKNN.name: ItemKNN,
    EASE.name: EASE,
}

__all__ = ["BASELINES", "EASE", "ItemKNN", "Popularity"]
