"""The lists every request shares (trending, popular, new items) and the catalog, read in the background.

Serving reads them from one in-process ``Snapshot`` instead of Redis on every request: they
change on the scale of seconds, and reading them is a scan of windows that no request should
pay for. The last snapshot is also what serving falls back to when Redis is unreachable.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from featurestore import layout
from featurestore.decay import Ranked
from featurestore.definitions import GLOBAL_SCOPE, region_scope
from featurestore.reader import FeatureReader
from kapparec.timeunits import DAY_MS
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.settled import decayed_rankings
from streams import topics

# Entries kept per ranked list: enough for a page of 200 after filters remove many.
LIST_LENGTH = 500
# The ``derived`` key of the catalog's columns (``serving.catalog_arrays``), which depend on the catalog alone.
CATALOG_ARRAYS = "catalog_arrays"
# The ``derived`` key of the active items by creation time (``by_creation``), which depend on the catalog alone.
BY_CREATION = "by_creation"
# The ``derived`` key of each scope's settled trending hours (``serving.settled``), which a refresh of the same version carries on.
SETTLED_HOURS = "settled_hours"
# What a refresh that keeps the catalog keeps of the previous snapshot's derived values.
CATALOG_DERIVED = (CATALOG_ARRAYS, BY_CREATION)
# How far back "trending" looks (FeatureReader.trending's default).
TRENDING_HORIZON_HOURS = 72


@dataclass(frozen=True)
class Snapshot:
    version: str
    log_clock_ms: int
    catalog: dict[str, dict]
    trending: dict[str, Ranked]  # scope ("global" or "region:<r>") -> items, best first
    popular: dict[str, Ranked]
    new_items: Ranked  # created within ``fresh_days`` of the log clock, newest first
    offsets: dict[str, str] = field(default_factory=dict)  # the store's committed positions it was taken at
    # What requests derive from the lists alone (their candidates, the set of new items), computed once per snapshot.
    _derived: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def take(cls, reader: FeatureReader, config: FunnelConfig, previous: "Snapshot | None" = None) -> "Snapshot":
        """Fresh lists; the catalog of ``previous`` is reused while the store's position in the
        ``items`` topic has not moved (with 100k items a read costs a noticeable share of a core,
        and catalog changes are rare next to trending's).

        ``previous`` itself is returned while the store has committed nothing since it was taken:
        a refresh then costs one small read instead of a scan of every trending hour, which would
        hold the GIL for tens of milliseconds that requests wait through.
        """
        offsets = reader.committed_offsets()
        if previous is not None and previous.version == reader.version and offsets and previous.offsets == offsets:
            return previous
        now = reader.log_clock_ms()
        scopes = [GLOBAL_SCOPE, *(region_scope(r) for r in reader.trending_regions(now))]
        reuse = (previous is not None and previous.version == reader.version and bool(offsets)
                 and _catalog_positions(previous.offsets) == _catalog_positions(offsets))
        # In item id order: the catalog's order is the order a short page is filled in, and a Redis
        # hash's own order changes with every restart of Redis.
        catalog = previous.catalog if reuse else dict(sorted(reader.whole_catalog().items()))
        # Sorted once per catalog: a refresh under live ingest (the offsets move every commit) then
        # costs a bisection instead of a pass over every item.
        ordered = previous._derived.get(BY_CREATION) if reuse else None
        if ordered is None:
            ordered = by_creation(catalog)
        # Trending and popular are two decays of the same windows: one scan per scope gives both.
        decays = [(config.trending_half_life_hours, TRENDING_HORIZON_HOURS),
                  (config.popular_half_life_hours, config.popular_horizon_hours)]
        carried = previous._derived.get(SETTLED_HOURS, {}) if previous is not None and previous.version == reader.version else {}
        settled_before = reader.settled_before_ms()
        rankings, settled = {}, {}
        for scope in scopes:
            rankings[scope], settled[scope] = decayed_rankings(reader, scope, LIST_LENGTH, decays, now, settled_before,
                                                               carried.get(scope))
        snapshot = cls(
            version=reader.version,
            log_clock_ms=now,
            catalog=catalog,
            trending={s: ranked[0] for s, ranked in rankings.items()},
            popular={s: ranked[1] for s, ranked in rankings.items()},
            new_items=created_within(ordered, now - config.fresh_days * DAY_MS, now)[:LIST_LENGTH],
            offsets=offsets,
        )
        if reuse:
            snapshot._derived.update({key: previous._derived[key] for key in CATALOG_DERIVED if key in previous._derived})
        snapshot._derived[BY_CREATION] = ordered
        snapshot._derived[SETTLED_HOURS] = settled
        return snapshot

    @classmethod
    def empty(cls) -> "Snapshot":
        return cls("", 0, {}, {}, {}, [])

    def derived(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per snapshot and ``key`` (two threads may both compute it once; either result serves)."""
        found = self._derived.get(key)
        if found is None:
            found = self._derived[key] = compute()
        return found

    def catalog_arrays(self) -> CatalogArrays:
        """The catalog as columns, built once per catalog (a refresh that keeps the catalog keeps them)."""
        return self.derived(CATALOG_ARRAYS, lambda: CatalogArrays.of(self.catalog))

    def trending_in(self, region: str) -> Ranked:
        """The region's list, or the global one where the region has none."""
        return self.trending.get(region_scope(region)) or self.trending.get(GLOBAL_SCOPE, [])

    def popular_in(self, region: str) -> Ranked:
        return self.popular.get(region_scope(region)) or self.popular.get(GLOBAL_SCOPE, [])


def by_creation(catalog: dict[str, dict]) -> tuple[list[float], Ranked]:
    """The active items as (item, creation time), newest first and ties by item id, beside their
    negated creation times (ascending, for ``created_within`` to bisect)."""
    pairs = sorted(((item, float(entry.get("created_at", -1))) for item, entry in catalog.items()
                    if entry.get("active", True)), key=lambda pair: (-pair[1], pair[0]))
    return [-created for _, created in pairs], pairs


def created_within(ordered: tuple[list[float], Ranked], since_ms: float, until_ms: float) -> Ranked:
    """The items of ``by_creation`` created from ``since_ms`` to ``until_ms`` (both included), newest first."""
    negated, pairs = ordered
    return pairs[bisect.bisect_left(negated, -until_ms):bisect.bisect_right(negated, -since_ms)]


def _catalog_positions(offsets: dict[str, str]) -> dict[str, str]:
    """The committed positions in the ``items`` topic: the catalog changes only when they move."""
    prefix = layout.offset_field(topics.ITEMS, 0).rsplit("/", 1)[0] + "/"
    return {field: offset for field, offset in offsets.items() if field.startswith(prefix)}
