"""Feature parameters: bucket sizes, history length, lateness and the weight of each event type.

One frozen ``FeatureConfig`` travels with every transform (it is pickled to the workers), so
a backfill and a stream job built from the same config compute the same features. CLI flags
override the defaults through ``FeatureConfig.from_dict``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kapparec.errors import UsageError
from kapparec.timeunits import DAY_MS, HOUR_MS
from streams.schema import EVENT_TYPES, Interaction


# How much an interaction says about the user's taste. Integers, so counts sum exactly in
# any order (floats would make the merged result depend on how the log was split).
# Impressions and dislikes weigh 0: being shown an item, or rejecting it, is no interest in it.
DEFAULT_EVENT_WEIGHTS: dict[str, int] = {
    "impression": 0,
    "click": 1,
    "view": 1,
    "play": 2,
    "progress": 1,
    "complete": 3,
    "like": 4,
    "dislike": 0,
    "add_to_cart": 2,
    "purchase": 5,
}

# A rating weighs by its value: the first (threshold, weight) whose threshold it reaches.
DEFAULT_RATING_WEIGHTS: tuple[tuple[float, int], ...] = ((4.0, 3), (3.0, 1))

RATE = "rate"
DISLIKE = "dislike"


@dataclass(frozen=True)
class FeatureConfig:
    """Every knob of the feature transforms, with the defaults a fresh deployment uses."""

    # Most recent interactions kept per user (HISTORY).
    history_length: int = 50
    # SEEN keeps each user's this-many most recently engaged items, so its size is bounded
    # whatever the user's lifetime; an item engaged with before all of them may be recommended
    # again (a rewatch), which a page of 20 from a catalog of thousands rarely reaches.
    seen_limit: int = 2_000
    # Bucket of the per-user item affinity counts; the reader decays them by bucket age. Kept
    # 90 days in log time: by then a 14-day half-life has left 1% of a count's weight.
    affinity_bucket_ms: int = DAY_MS
    affinity_retention_ms: int = 90 * DAY_MS
    # Bucket of the per-item popularity counts, kept 31 days in log time.
    popularity_bucket_ms: int = DAY_MS
    popularity_retention_ms: int = 31 * DAY_MS
    # Bucket of the trending counts: short, so "trending now" reacts within the hour.
    trending_bucket_ms: int = HOUR_MS
    # How long a trending bucket is kept, in log time: past the longest horizon serving reads
    # (popular items, 30 days), and past the allowed lateness so an expired bucket never returns.
    trending_retention_ms: int = 31 * DAY_MS
    # Engagements of one user with one item within one trending bucket from which the user
    # counts as a bot there and no longer adds to the item's trend.
    trending_actor_cap: int = 30
    # How long the attribution facts (SHOWN, RESPONDED) of a day are kept, in log time: an
    # experiment's report covers the impressions of this many days back.
    attribution_retention_ms: int = 90 * DAY_MS
    # Fixed event-time window per user within which items count as co-occurring.
    session_window_ms: int = DAY_MS
    # Items of one user window that take part in co-occurrence: caps the pairs a heavy user
    # can emit (n items make n(n-1) directed pairs: 380 at 20, 2,450 at 50) and keeps bots
    # from dominating item-item similarity. At 50, pairs were ~80% of a backfill's mutations.
    max_items_per_session_window: int = 20
    # A record whose event time is this far behind its partition's log watermark is too late
    # for the windowed features; it is counted (LATE) instead.
    allowed_lateness_ms: int = 6 * HOUR_MS
    event_weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS), hash=False)
    rating_weights: tuple[tuple[float, int], ...] = DEFAULT_RATING_WEIGHTS

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, int) and (isinstance(value, bool) or value < 0):
                raise UsageError(f"feature setting {spec.name} must be a non-negative integer, got {value!r}")
        for name in ("history_length", "seen_limit", "affinity_bucket_ms", "popularity_bucket_ms", "trending_bucket_ms", "trending_actor_cap",
                     "session_window_ms", "max_items_per_session_window"):
            if getattr(self, name) == 0:
                raise UsageError(f"feature setting {name} must be positive")
        for name in ("trending_retention_ms", "popularity_retention_ms", "affinity_retention_ms", "attribution_retention_ms"):
            if getattr(self, name) <= self.allowed_lateness_ms:
                raise UsageError(f"feature setting {name} must exceed allowed_lateness_ms, "
                                 "or a bucket could expire and then be written again by a late record")
        missing = set(EVENT_TYPES) - {RATE} - set(self.event_weights)
        unknown = set(self.event_weights) - set(EVENT_TYPES)
        if missing or unknown:
            raise UsageError(f"event_weights: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 0 for w in self.event_weights.values()):
            raise UsageError("event_weights must be non-negative integers")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        """Defaults overridden by ``values``; ``event_weights`` may override only some types."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown feature setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        settings = dict(values)
        if "event_weights" in settings:
            settings["event_weights"] = {**DEFAULT_EVENT_WEIGHTS, **settings["event_weights"]}
        if "rating_weights" in settings:
            settings["rating_weights"] = tuple((float(t), int(w)) for t, w in settings["rating_weights"])
        return cls(**settings)

    def pinned(self) -> dict[str, Any]:
        """The settings as the store keeps them with a version (JSON types)."""
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def differences(self, pinned: Mapping[str, Any]) -> list[str]:
        """The settings where ``pinned`` (a version's) differs from these, as "name: theirs != ours"."""
        ours = self.pinned()
        return [f"{name}: {pinned.get(name)!r} != {ours.get(name)!r}"
                for name in sorted(set(ours) | set(pinned)) if pinned.get(name) != ours.get(name)]

    def weight(self, event: Interaction) -> int:
        """The integer interest weight of one interaction."""
        if event.event_type == RATE:
            for threshold, weight in self.rating_weights:
                if event.value is not None and event.value >= threshold:
                    return weight
            return 0
        return self.event_weights[event.event_type]

    def is_positive(self, event: Interaction) -> bool:
        """Whether the interaction shows interest (it feeds co-occurrence)."""
        return event.event_type != DISLIKE and self.weight(event) > 0
