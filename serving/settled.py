"""Trending and popular lists refreshed from the hours that can still change.

A refresh under live ingest used to read every hour of the longest horizon (30 days of
``TRENDING_RANK`` windows per scope) and sum them again, though records only land in the last
few: every older hour is settled (``FeatureReader.settled_before_ms``). The settled hours' sums
are kept here at a reference time (the start of the log clock's hour); one decay factor carries
them to any later time of that hour, as every hour ages alike. So a refresh reads and sums the
open hours only, and the n best of the settled sums together with every item of the open hours
hold the n best of the whole: an item in neither gains nothing and stays behind all n.

The settled sums are read again when the log clock enters a new hour (the horizon moves), when
the settled boundary moves, and at least every ``REREAD_S`` seconds: that bounds how long a record
the boundary cannot foresee (one from a partition the store has never read) stays unseen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from featurestore.decay import Decay, Ranked, best, decayed_sums, hours_within
from featurestore.reader import CANDIDATES_PER_HOUR, FeatureReader
from kapparec.timeunits import HOUR_MS

REREAD_S = 600.0


@dataclass(frozen=True)
class SettledHours:
    """One scope's decayed sums over its settled hours, at ``reference_ms``, and the ``n`` best of each."""

    key: tuple
    reference_ms: int
    sums: list[dict[str, float]]
    leaders: list[Ranked]
    read_at: float

    def current(self, key: tuple) -> bool:
        return self.key == key and time.monotonic() - self.read_at < REREAD_S


def decayed_rankings(reader: FeatureReader, scope: str, n: int, decays: list[Decay], now_ms: int,
                     settled_before_ms: int | None, settled: SettledHours | None) -> tuple[list[Ranked], SettledHours]:
    """``reader.decayed_rankings(scope, n, decays, now_ms)``, reading only the open hours while
    ``settled`` (the previous refresh's) still holds; the settled hours to keep for the next."""
    now_hour = now_ms - now_ms % HOUR_MS
    hours = hours_within(now_ms, max(horizon for _, horizon in decays))
    # An hour is settled when all of it is before the boundary.
    boundary = hours[-1] if settled_before_ms is None else settled_before_ms - settled_before_ms % HOUR_MS
    per_hour = CANDIDATES_PER_HOUR * n
    key = (reader.version, scope, now_hour, boundary, tuple(decays), n)
    if settled is None or not settled.current(key):
        settled_hours = reader.hour_rankings(scope, [hour for hour in hours if hour < boundary], per_hour)
        sums = decayed_sums(settled_hours, decays, now_hour)
        settled = SettledHours(key, now_hour, sums, [best(summed, n) for summed in sums], time.monotonic())
    open_sums = decayed_sums(reader.hour_rankings(scope, [hour for hour in hours if hour >= boundary], per_hour),
                             decays, now_ms)
    rankings = []
    for (half_life_hours, _), settled_sums, leaders, opened in zip(decays, settled.sums, settled.leaders, open_sums):
        aged = 0.5 ** ((now_ms - settled.reference_ms) / HOUR_MS / half_life_hours)
        candidates = {item: score * aged for item, score in leaders}
        for item, score in opened.items():
            candidates[item] = settled_sums.get(item, 0.0) * aged + score
        rankings.append(best(candidates, n))
    return rankings, settled
