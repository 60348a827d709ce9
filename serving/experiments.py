"""A/B experiments: which bucket a user is in, and what that bucket serves.

The experiments file (TOML, reloaded by the server without a restart) lists experiments; each
takes a ``traffic`` share of all users and splits it between variants by ``share``::

    [[experiment]]
    name = "ranker"
    salt = "2026-11"          # change it to reshuffle the users
    traffic = 1.0             # share of all users in this experiment
    control = "popular"       # the variant lifts are measured against (default: the first)

    [[experiment.variant]]
    name = "popular"
    share = 0.5
    popularity_only = true    # serve popular items only, no personal candidates

    [[experiment.variant]]
    name = "funnel"
    share = 0.5
    model_version = "v0003"   # optional: a registered version (default: production)
    funnel = { max_per_category = 2, weights = { two_tower = 1.5 } }

A user's place is a pure function of (salt, user id): ``experiment_hash`` picks the experiment
(experiments take consecutive slices of the unit interval, in file order) and a second hash,
salted per experiment, picks the variant. So a user stays in their bucket across reloads and
restarts, and moves only when a salt, a share or the order of experiments changes.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kapparec.errors import UsageError
from serving.config import SOURCES, FunnelConfig

# Shares are decimal fractions a person types; they must sum to 1 within this.
SHARE_TOLERANCE = 1e-6
# The allocation between experiments has its own fixed salt, so that an experiment's own salt
# reshuffles only its variants.
ALLOCATION_SALT = "kapparec-experiments"
POPULARITY_ONLY = {
    "weights": {source: (1.0 if source == "popular" else 0.0) for source in SOURCES},
    "exploration_share": 0.0,
}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    share: float = Field(gt=0, le=1)
    model_version: str | None = None
    popularity_only: bool = False
    funnel: dict[str, Any] = Field(default_factory=dict)

    def funnel_config(self, base: FunnelConfig) -> FunnelConfig:
        overrides = {**self.funnel, **POPULARITY_ONLY} if self.popularity_only else self.funnel
        return FunnelConfig.from_overrides(overrides, base)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str = Field(min_length=1, max_length=128)
    traffic: float = Field(default=1.0, gt=0, le=1)
    control: str = ""
    variant: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = _unique_names(f"experiment {self.name}: variant", self.variant)
        total = sum(v.share for v in self.variant)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"experiment {self.name}: variant shares sum to {total:g}, not 1")
        if self.control and self.control not in names:
            raise ValueError(f"experiment {self.name}: control {self.control!r} is not one of its variants {names}")
        return self

    @property
    def control_variant(self) -> str:
        return self.control or self.variant[0].name


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: tuple[Experiment, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentsFile":
        _unique_names("experiment", self.experiment)
        total = sum(e.traffic for e in self.experiment)
        if total > 1.0 + SHARE_TOLERANCE:
            raise ValueError(f"experiments' traffic sums to {total:g}, more than 1")
        return self

    def model_versions(self) -> set[str]:
        return {v.model_version for e in self.experiment for v in e.variant if v.model_version}


def _unique_names(what: str, entries) -> list[str]:
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names repeat: {names}")
    return names


@dataclass(frozen=True)
class Bucket:
    experiment: str
    variant: Variant

    @property
    def label(self) -> str:
        """The bucket as responses, impressions and metrics name it: ``experiment/variant``."""
        return f"{self.experiment}/{self.variant.name}"


def unit_hash(salt: str, user_id: str) -> float:
    """A uniform point of [0, 1) for (salt, user): the same in every process and release."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(experiments: ExperimentsFile, user_id: str) -> Bucket | None:
    """The user's bucket, or None when no experiment takes them (they get the default serving)."""
    point, start = unit_hash(ALLOCATION_SALT, user_id), 0.0
    for experiment in experiments.experiment:
        if start <= point < start + experiment.traffic:
            return Bucket(experiment.name, _variant_of(experiment, user_id))
        start += experiment.traffic
    return None


def _variant_of(experiment: Experiment, user_id: str) -> Variant:
    point, start = unit_hash(experiment.salt, user_id), 0.0
    for variant in experiment.variant:
        start += variant.share
        if point < start:
            return variant
    return experiment.variant[-1]  # the shares' rounding leaves a sliver below 1


def parse(text: str, source: str = "experiments file") -> ExperimentsFile:
    """The file's experiments, each variant's funnel settings checked; a bad file is one UsageError line."""
    try:
        experiments = ExperimentsFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not TOML: {exc}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise UsageError(f"{source}: {where + ': ' if where else ''}{error['msg']}") from None
    for experiment in experiments.experiment:
        for variant in experiment.variant:
            try:
                variant.funnel_config(FunnelConfig())
            except UsageError as exc:
                raise UsageError(f"{source}: experiment {experiment.name} variant {variant.name}: {exc}") from None
    return experiments


def load(path: Path) -> ExperimentsFile:
    """The experiments in ``path``; a missing file means no experiments."""
    if not path.exists():
        return ExperimentsFile()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    return parse(text, str(path))
