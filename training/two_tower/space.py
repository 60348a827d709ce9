"""The grids the two-tower's validation search walks (no TensorFlow here: the CLI lists them)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.two_tower.train import TwoTowerParams


@dataclass(frozen=True)
class SearchSpace:
    """The grid searched; ``max_epochs`` bounds each trial."""

    name: str
    temperature: tuple[float, ...]
    output_dim: tuple[int, ...]
    learning_rate: tuple[float, ...]
    history_len: tuple[int, ...]
    max_epochs: int
    patience: int = 3

    def configurations(self, base: "TwoTowerParams", seed: int) -> list["TwoTowerParams"]:
        """``base`` first, then every other grid point in a seeded random order."""
        grid = [
            dataclasses.replace(
                base,
                temperature=temperature,
                learning_rate=learning_rate,
                history_len=history_len,
                shape=dataclasses.replace(base.shape, output_dim=output_dim),
            )
            for temperature, output_dim, learning_rate, history_len in itertools.product(
                self.temperature, self.output_dim, self.learning_rate, self.history_len
            )
        ]
        rest = [params for params in grid if params != base]
        random.Random(seed).shuffle(rest)
        return [base, *rest]


SPACES = {
    # The grid a real retrain searches within its time budget.
    "full": SearchSpace("full", (0.05, 0.1, 0.2), (32, 64), (1e-3, 3e-3), (10, 20, 50), max_epochs=20),
    # A fixed, tiny grid for CI and tests: the defaults and one other temperature, a few epochs.
    "small": SearchSpace("small", (0.1, 0.2), (64,), (3e-3,), (50,), max_epochs=3, patience=1),
}
DEFAULT_SPACE = "full"
DEFAULT_BUDGET_MINUTES = 30.0


