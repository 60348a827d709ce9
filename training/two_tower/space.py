"""The grids the two-tower's validation search samples (no TensorFlow here: the CLI lists them)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelfiles.query import ATTENTION, MEAN, RECENCY

if TYPE_CHECKING:
    from training.two_tower.train import TwoTowerParams


# Encoders that pool the item vectors themselves, with nothing to drop out.
POOLING = (MEAN, RECENCY)
# Encoders whose call costs so much more than pooling that fewer members fit serving's 0.3 ms of
# CPU per user-tower call: a members' tower costs its members' sum (``kapparec``'s user-tower
# bench measures every encoder with the most members it may keep).
MOST_MEMBERS = {ATTENTION: 4}


@dataclass(frozen=True)
class SearchSpace:
    """The grid searched, ``trials`` of its points (a seeded sample, so two runs choose alike
    whatever the machine's speed); ``max_epochs`` bounds each trial."""

    name: str
    encoder: tuple[str, ...]
    embedding_dim: tuple[int, ...]
    dropout: tuple[float, ...]
    history_len: tuple[int, ...]
    temperature: tuple[float, ...]
    learning_rate: tuple[float, ...]
    catalog_fields: tuple[bool, ...]  # whether the item tower reads release year and title words
    per_position: tuple[bool, ...]  # whether training batches chunks of every position (``positions``)
    # How many independently initialised members the chosen configuration may keep (``model.Members``):
    # chosen after the trials, which train one member each, by one fit of the most (``search.choose_members``).
    members: tuple[int, ...]
    trials: int
    max_epochs: int
    patience: int = 3

    def members_for(self, encoder: str) -> tuple[int, ...]:
        """The member counts open to ``encoder``: those whose user tower fits serving's CPU budget."""
        return tuple(count for count in self.members if count <= MOST_MEMBERS.get(encoder, max(self.members)))

    def grid(self, base: "TwoTowerParams") -> list["TwoTowerParams"]:
        return [
            dataclasses.replace(
                base,
                temperature=temperature,
                learning_rate=learning_rate,
                history_len=history_len,
                per_position=per_position,
                shape=dataclasses.replace(base.shape, encoder=encoder, embedding_dim=dim, dropout=dropout,
                                          catalog_fields=catalog_fields),
            )
            for encoder, dim, dropout, history_len, temperature, learning_rate, catalog_fields, per_position in itertools.product(
                self.encoder, self.embedding_dim, self.dropout, self.history_len, self.temperature, self.learning_rate,
                self.catalog_fields, self.per_position,
            )
            # The pooling encoders have no dropout: its other values would repeat the same trial.
            if encoder not in POOLING or dropout == self.dropout[0]
        ]

    def configurations(self, base: "TwoTowerParams", seed: int, trials: int | None = None) -> list["TwoTowerParams"]:
        """``base`` first; then, where the grid has both, ``base`` with the item tower's catalog
        fields switched, so that a search of two trials already weighs them against the same
        configuration without them; then grid points in a seeded random order that takes each
        encoder in turn, the base's last (so every encoder is tried however few the trials),
        ``trials`` in all."""
        switched = dataclasses.replace(base, shape=dataclasses.replace(
            base.shape, catalog_fields=not base.shape.catalog_fields))
        first = [base, switched] if switched in self.grid(base) else [base]
        encoders = sorted(self.encoder, key=lambda encoder: encoder == base.shape.encoder)
        by_encoder: dict[str, list] = {encoder: [] for encoder in encoders}
        for params in self.grid(base):
            if params not in first:
                by_encoder.setdefault(params.shape.encoder, []).append(params)
        rng = random.Random(seed)
        for points in by_encoder.values():
            rng.shuffle(points)
        turns = itertools.zip_longest(*by_encoder.values())
        ordered = [params for turn in turns for params in turn if params is not None]
        return [*first, *ordered][: self.trials if trials is None else trials]


SPACES = {
    # The grid a real retrain samples: the encoders serving can afford (each gets a turn within the
    # first trials, so fifteen give each several configurations), their width, dropout and
    # history length, the softmax's temperature and learning rate, and whether the item tower reads
    # the catalog's release year and title words. The GRU is not among them:
    # its steps run one after another, and in numpy a call costs several times serving's 0.3 ms
    # user-tower budget (``kapparec``'s user-tower bench), where attention and recency cost about mean-pooling's.
    "full": SearchSpace("full", (MEAN, RECENCY, ATTENTION), (32, 64), (0.0, 0.2), (20, 50), (0.05, 0.1, 0.2),
                        (1e-3, 3e-3), (True, False), (False, True), (1, 2, 3, 4, 6, 8), trials=15, max_epochs=15),
    # A fixed, tiny grid for CI and tests: the defaults and one attention tower, a few epochs, one or two members.
    "small": SearchSpace("small", (MEAN, ATTENTION), (64,), (0.0,), (50,), (0.1,), (3e-3,), (True,), (False,), (1, 2),
                         trials=2, max_epochs=3, patience=1),
}
DEFAULT_SPACE = "full"
