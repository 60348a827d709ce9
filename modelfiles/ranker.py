"""The learned ranker's file (``ranker.json`` in a model version): standardised features times coefficients.

``training.learned_ranker`` fits it on a replay's validation split; serving scores each known
user's candidates with it (``serving.ranker`` computes the features). The file names the features
it was fitted on, in order, so a reader that computes other features refuses it instead of
scoring columns against the wrong coefficients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RANKER_FILE = "ranker.json"


class RankerFileError(ValueError):
    """A ranker file that cannot score: its one-line message names what is wrong."""


@dataclass(frozen=True)
class LearnedRanker:
    """Standardised features times coefficients: a higher score ranks first."""

    features: tuple[str, ...]  # the name of each column of the matrices it scores
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    record: dict = field(default_factory=dict)  # how it was fitted and chosen (training's report)

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return ((matrix - self.mean) / self.scale) @ self.coef

    def save(self, path: Path) -> None:
        payload = {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                   "coef": self.coef.tolist(), "record": self.record}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path, features: tuple[str, ...]) -> "LearnedRanker":
        """The ranker in ``path``, which must have been fitted on ``features`` (the reader's columns)."""
        try:
            payload = json.loads(path.read_text())
            fitted_on = payload["features"]
            arrays = [np.asarray(payload[key], dtype=np.float64) for key in ("mean", "scale", "coef")]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RankerFileError(f"{path.name} is unreadable: {type(exc).__name__}: {exc}") from None
        if fitted_on != list(features):
            raise RankerFileError(f"{path.name} was fitted on other features than this serving code computes")
        if any(a.shape != (len(features),) or not np.isfinite(a).all() for a in arrays) or (arrays[1] <= 0).any():
            raise RankerFileError(f"{path.name} holds arrays that are not {len(features)} finite numbers, or a scale <= 0")
        return cls(tuple(features), *arrays, record=payload.get("record") or {})
