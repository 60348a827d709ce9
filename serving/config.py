"""The funnel's knobs: candidate counts, the blend, diversity, exploration.

A pydantic model, so a variant's overrides (``FunnelConfig.from_overrides``) are validated
with one clear error rather than failing inside a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kapparec.errors import UsageError
from serving.request import SOURCES


def _default_weights() -> dict[str, float]:
    return {"two_tower": 1.0, "co_occurrence": 0.6, "continue_watching": 2.0, "trending": 0.3, "popular": 0.15,
            "new_item": 0.2}


class FunnelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The blend: a candidate earns weight / (rank_offset + its rank) from every source that
    # proposed it. Rank-based, because the sources' raw scores (dot products, cosines, decayed
    # counts) live on scales that do not compare; the offset keeps one source's first place
    # from outweighing agreement between sources.
    weights: dict[str, float] = Field(default_factory=_default_weights)
    rank_offset: float = Field(default=10.0, gt=0)
    two_tower_candidates: int = Field(default=100, ge=0, le=1000)
    recent_items: int = Field(default=3, ge=0, le=20)  # history items whose co-occurrence neighbours are candidates
    neighbours_per_item: int = Field(default=20, ge=0, le=200)
    list_candidates: int = Field(default=50, ge=0, le=500)  # trending, popular and new items each
    fresh_days: int = Field(default=7, ge=1)  # "new" = created within this many days of the log clock
    exploration_share: float = Field(default=0.1, ge=0, le=1)  # of each page, kept for new items
    max_per_category: int = Field(default=3, ge=0)  # diversity: 0 turns the rule off
    onboarding_boost: float = Field(default=2.0, ge=1)  # a cold-start item in a chosen category scores this much more
    trending_half_life_hours: float = Field(default=6.0, gt=0)
    popular_half_life_hours: float = Field(default=24.0 * 7, gt=0)
    popular_horizon_hours: int = Field(default=24 * 30, gt=0)

    def model_post_init(self, _context: Any) -> None:
        unknown = sorted(set(self.weights) - set(SOURCES))
        if unknown or any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights: unknown sources {unknown} or a negative weight; sources: {', '.join(SOURCES)}")

    @property
    def sources(self) -> frozenset[str]:
        """The sources worth generating: a source weighted 0 adds nothing to the blend, except new
        items while exploration keeps a share of the page for them."""
        weighted = {source for source, weight in self.weights.items() if weight > 0}
        return frozenset(weighted | ({"new_item"} if self.exploration_share > 0 else set()))

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any], base: "FunnelConfig | None" = None) -> "FunnelConfig":
        values = (base or cls()).model_dump()
        if "weights" in overrides:
            overrides = {**overrides, "weights": {**values["weights"], **overrides["weights"]}}
        try:
            return cls(**{**values, **overrides})
        except (ValidationError, ValueError, TypeError) as exc:
            raise UsageError(f"bad funnel setting: {str(exc).splitlines()[0]} ({_first_error(exc)})") from None

    def every_source(self) -> "FunnelConfig":
        """This config generating every source, as for a model whose learned ranker weighs them all:
        a source it does not weight gets weight 1 (the blend's weights play no part in that ranking)."""
        unweighted = {source: 1.0 for source in SOURCES if self.weights.get(source, 0.0) <= 0}
        return self.from_overrides({"weights": unweighted}, self)

    def source_weights(self) -> list[float]:
        """Each source's blend weight, indexed by ``SOURCE_CODE``."""
        return [self.weights.get(source, 0.0) for source in SOURCES]


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(exc)
