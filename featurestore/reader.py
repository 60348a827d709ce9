"""The one reader API over the feature store, for training and serving alike.

The store holds exact, mergeable aggregates; this is where they become features: time
decay, top-N selection, normalisation and the join with the catalog happen here, at read
time. Decay is relative to the log's event-time clock (the highest event time the
pipelines have seen), not the wall clock, so a replayed store reads exactly the same.
"""

from __future__ import annotations

import heapq
import json
import math
from operator import itemgetter
from dataclasses import dataclass

import redis

from featurestore import layout
from featurestore.decay import Decay, HourRanking, Ranked, best, decayed_sums, hours_within
from featurestore.definitions import (
    PROFILE_FIELDS,
    REGION_SCOPE_PREFIX,
    Feature,
    parse_history_member,
    timed_tower_history,
    tower_history,
    window_entity,
)
from kapparec.errors import KapparecError
from kapparec.timeunits import DAY_MS, HOUR_MS
from streams import topics
from transforms.config import FeatureConfig

# Trending reads this many times ``n`` of each hour's best items before merging the hours.
CANDIDATES_PER_HOUR = 3
# Similar items: this many times ``n`` of the most frequent co-occurring items are normalised.
CANDIDATES_PER_NEIGHBOUR = 5
# KEYS: the occurrence hash, then one co-occurrence ranking per item; ARGV: how many pairs, then the items.
# Per item: its most frequent pairs (member, count, ...) and the occurrences of the item and of each
# partner, so that any number of items costs one round trip.
_NEIGHBOURS = """
local found = {}
for i = 2, #KEYS do
  local pairs = redis.call('ZREVRANGE', KEYS[i], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
  local members = {ARGV[i]}
  for j = 1, #pairs, 2 do members[#members + 1] = pairs[j] end
  found[#found + 1] = pairs
  found[#found + 1] = redis.call('HMGET', KEYS[1], unpack(members))
end
return found
"""


@dataclass(frozen=True)
class HistoryEntry:
    item_id: str
    event_type: str
    event_time: int


@dataclass(frozen=True)
class UserFeatures:
    """Everything the request path reads about one user, fetched in one round trip."""

    history: list[HistoryEntry]  # newest first, the whole stored HISTORY
    profile: dict[str, str]
    seen: set[str]
    disliked: set[str]
    continue_watching: list[tuple[str, float]]
    stamp: tuple = ()  # ``FeatureReader.user_stamp`` of the same read

    def tower_history(self, length: int) -> list[str]:
        return tower_history(((e.item_id, e.event_type) for e in self.history), length)

    def timed_tower_history(self, length: int) -> list[tuple[str, int]]:
        return timed_tower_history(((e.item_id, e.event_type, e.event_time) for e in self.history), length)

    @property
    def is_new(self) -> bool:
        return not self.history and not self.seen


class FeatureReader:
    def __init__(self, redis_url: str, version: str | None = None, timeout_s: float | None = None):
        """``timeout_s`` bounds every Redis call (the request path fails fast rather than hang)."""
        self.client = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._pinned: dict | None = None
        self._neighbours = self.client.register_script(_NEIGHBOURS)
        self.version = version or self.client.get(layout.CURRENT)
        if self.version is None:
            raise KapparecError("the feature store is empty: run `kapparec backfill` or `kapparec stream` first")

    def _key(self, feature: str, entity: str) -> str:
        return layout.feature_key(self.version, feature, entity)

    # -- the clock ----------------------------------------------------------------------

    def log_clock_ms(self) -> int:
        """The highest event time seen in the log: the "now" that decay is measured from."""
        marks = self.client.hvals(self._key(Feature.HIGH_WATER, topics.EVENTS))
        return max((int(m) for m in marks), default=0)

    def settled_before_ms(self) -> int | None:
        """An event time before which no record can still change a windowed feature (None: none yet).

        A record is on time while its event time is within the allowed lateness of its
        partition's high water (``transforms.extract.is_late``), and a high water only rises, so
        the lowest high water less the lateness bounds every record still to come. A partition
        the store has read without a high water (only refused records so far) could still
        deliver any event time, and so could one never read, which the store cannot know of:
        the caller bounds that by reading everything again now and then (``serving.settled``).
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._key(Feature.HIGH_WATER, topics.EVENTS))
        pipe.hkeys(layout.offsets_key(self.version))
        marks, positions = pipe.execute()
        read = {field.rsplit("/", 1)[1] for field in positions if field.rsplit("/", 1)[0] == topics.EVENTS}
        if not marks or not read <= set(marks):
            return None
        return min(int(mark) for mark in marks.values()) - int(self._settings()["allowed_lateness_ms"])

    def committed_offsets(self) -> dict[str, str]:
        """The version's committed source positions: every commit of the pipelines moves them, so
        while they are unchanged nothing this reader reads has changed either."""
        return self.client.hgetall(layout.offsets_key(self.version))

    # -- user features ------------------------------------------------------------------

    def history(self, user_id: str, n: int = 50) -> list[HistoryEntry]:
        """The user's last ``n`` interactions, newest first."""
        members = self.client.zrevrange(self._key(Feature.HISTORY, user_id), 0, n - 1)
        return [_history_entry(member) for member in members]

    def tower_history(self, user_id: str, length: int) -> list[str]:
        """The user tower's history input (``featurestore.definitions.tower_history``), newest first."""
        return [item for item, _ in self.timed_tower_history(user_id, length)]

    def timed_tower_history(self, user_id: str, length: int) -> list[tuple[str, int]]:
        """The user tower's history input with each item's event time, newest first."""
        members = self.client.zrevrange(self._key(Feature.HISTORY, user_id), 0, -1)
        return timed_tower_history(map(parse_history_member, members), length)

    def profile(self, user_id: str) -> dict[str, str]:
        """The region and device of the user's latest event that had each ("" when none had)."""
        return _profile(self.client.hmget(self._key(Feature.PROFILE, user_id), PROFILE_FIELDS))

    def user_features(self, user_id: str) -> UserFeatures:
        """History, profile, seen, disliked and continue-watching of one user, in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(self._key(Feature.HISTORY, user_id), 0, -1)
        pipe.hmget(self._key(Feature.PROFILE, user_id), PROFILE_FIELDS)
        pipe.zrange(self._key(Feature.SEEN, user_id), 0, -1)
        pipe.hgetall(self._key(Feature.DISLIKED, user_id))
        pipe.hgetall(self._key(Feature.PROGRESS, user_id))
        members, profile, seen, disliked, progress = pipe.execute()
        return UserFeatures(
            history=[_history_entry(member) for member in members],
            profile=_profile(profile),
            seen=set(seen),
            disliked=_disliked(disliked),
            continue_watching=_started(progress),
            stamp=_user_stamp(self.version, len(members), members[:1], len(seen), seen[:1], len(disliked), profile),
        )

    def user_stamp(self, user_id: str) -> tuple:
        """A value that changes when an event changes what ``user_features`` reads, in one round trip.

        Every interaction but an impression enters HISTORY (its size or its newest member
        moves) or, when it is older than the 50 kept, still enters SEEN: SEEN grows, or, full,
        loses its oldest member; an impression moves at most the PROFILE, which is part of the stamp.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self._key(Feature.HISTORY, user_id))
        pipe.zrevrange(self._key(Feature.HISTORY, user_id), 0, 0)
        pipe.zcard(self._key(Feature.SEEN, user_id))
        pipe.zrange(self._key(Feature.SEEN, user_id), 0, 0)
        pipe.hlen(self._key(Feature.DISLIKED, user_id))
        pipe.hmget(self._key(Feature.PROFILE, user_id), PROFILE_FIELDS)
        return _user_stamp(self.version, *pipe.execute())

    def seen(self, user_id: str) -> set[str]:
        return set(self.client.zrange(self._key(Feature.SEEN, user_id), 0, -1))

    def disliked(self, user_id: str) -> set[str]:
        return _disliked(self.client.hgetall(self._key(Feature.DISLIKED, user_id)))

    def continue_watching(self, user_id: str, low: float = 0.05, high: float = 0.95) -> list[tuple[str, float]]:
        """Items started but not finished, most recently touched first."""
        return _started(self.client.hgetall(self._key(Feature.PROGRESS, user_id)), low, high)

    def category_affinity(self, user_id: str, half_life_days: float = 14.0, now_ms: int | None = None) -> dict[str, float]:
        """Time-decayed interest per category, normalised to sum to 1 (over the retained buckets)."""
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        settings = self._settings()
        per_item: dict[str, float] = {}
        for bucket, weights in self._windows(Feature.AFFINITY, user_id, now_ms, settings["affinity_bucket_ms"],
                                             settings["affinity_retention_ms"]):
            decay = 0.5 ** (max(0, now_ms - bucket) / DAY_MS / half_life_days)
            for item, weight in weights.items():
                per_item[item] = per_item.get(item, 0.0) + int(weight) * decay
        scores: dict[str, float] = {}
        for item, entry in self.catalog(list(per_item)).items():
            for category in entry.get("categories", ()):
                scores[category] = scores.get(category, 0.0) + per_item[item]
        total = sum(scores.values())
        return {c: s / total for c, s in sorted(scores.items())} if total else {}

    # -- item features ------------------------------------------------------------------

    def whole_catalog(self) -> dict[str, dict]:
        """Every item's latest catalog entry."""
        return {item: json.loads(_latest_payload(v)) for item, v in self.client.hgetall(self._key(Feature.CATALOG, "")).items()}

    def trending_regions(self, now_ms: int | None = None) -> list[str]:
        """The regions that have trending counts (within the trending retention): one union of the
        retained hours' TRENDING_SCOPES, where a scan of the keyspace for their rankings cost a
        snapshot refresh a round trip per thousand keys of the whole store."""
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        settings = self._settings()
        bucket_ms, retention_ms = settings["trending_bucket_ms"], settings["trending_retention_ms"]
        newest = now_ms - now_ms % bucket_ms
        hours = range(newest - retention_ms, newest + bucket_ms, bucket_ms)
        scopes = self.client.sunion([self._key(Feature.TRENDING_SCOPES, str(hour)) for hour in hours])
        return sorted(scope[len(REGION_SCOPE_PREFIX):] for scope in scopes)

    def catalog(self, item_ids: list[str]) -> dict[str, dict]:
        """Latest catalog entry per item (items never seen in the catalog are left out)."""
        if not item_ids:
            return {}
        values = self.client.hmget(self._key(Feature.CATALOG, ""), item_ids)
        return {item: json.loads(_latest_payload(v)) for item, v in zip(item_ids, values) if v is not None}

    def popularity(self, item_id: str, days: int = 7, now_ms: int | None = None) -> dict[str, int]:
        """Event counts per type over the buckets of the last ``days`` days."""
        counts: dict[str, int] = {}
        for _, per_type in self.popularity_over_time(item_id, days, now_ms):
            for event_type, count in per_type.items():
                counts[event_type] = counts.get(event_type, 0) + count
        return counts

    def popularity_over_time(self, item_id: str, days: int = 7, now_ms: int | None = None) -> list[tuple[int, dict[str, int]]]:
        """(bucket start, event counts per type) of every popularity bucket of the last ``days``
        days, oldest first; a bucket without events has no counts, so the buckets make a time axis."""
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        bucket_ms = self._settings()["popularity_bucket_ms"]
        found = dict(self._windows(Feature.POPULARITY, item_id, now_ms, bucket_ms, days * DAY_MS))
        newest = now_ms - now_ms % bucket_ms
        return [(bucket, {event_type: int(count) for event_type, count in found.get(bucket, {}).items()})
                for bucket in reversed(range(newest, now_ms - days * DAY_MS, -bucket_ms))]

    def _windows(self, feature: str, entity: str, now_ms: int, bucket_ms: int, span_ms: int) -> list[tuple[int, dict]]:
        """(bucket start, hash) of every bucket of ``entity`` within ``span_ms`` before ``now_ms``, in one round trip."""
        newest = now_ms - now_ms % bucket_ms
        buckets = [bucket for bucket in range(newest, now_ms - span_ms, -bucket_ms)]
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self._key(feature, window_entity(entity, bucket)))
        return [(bucket, values) for bucket, values in zip(buckets, pipe.execute()) if values]

    def _settings(self) -> dict:
        """The feature settings this version was built with (the defaults for a version from before pinning)."""
        if self._pinned is None:
            meta = json.loads(self.client.hget(layout.VERSIONS, self.version) or "{}")
            self._pinned = {**FeatureConfig().pinned(), **(meta.get("config") or {})}
        return self._pinned

    def trending(
        self,
        scope: str = "global",
        n: int = 20,
        half_life_hours: float = 6.0,
        horizon_hours: int = 72,
        now_ms: int | None = None,
    ) -> list[tuple[str, float]]:
        """Top ``n`` items by distinct users per hour, decayed exponentially over recent hours.

        ``scope`` is "global" or "region:<r>".
        """
        return self.decayed_rankings(scope, n, [(half_life_hours, horizon_hours)], now_ms)[0]

    def decayed_rankings(self, scope: str, n: int, decays: list[Decay], now_ms: int | None = None) -> list[Ranked]:
        """``trending`` for several (half-life hours, horizon hours) at once.

        Each hour keeps its own ranking, so a read takes the ``CANDIDATES_PER_HOUR * n`` best of
        each hour in the longest horizon (one pipelined round trip) and merges them: its cost
        depends on ``n`` and the horizon, not on how long the log is. An item outside every
        hour's candidates is left out, even if its sum would have placed it.
        """
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        hours = hours_within(now_ms, max(horizon for _, horizon in decays))
        sums = decayed_sums(self.hour_rankings(scope, hours, CANDIDATES_PER_HOUR * n), decays, now_ms)
        return [best(summed, n) for summed in sums]

    def hour_rankings(self, scope: str, hours: list[int], per_hour: int) -> list[HourRanking]:
        """The ``per_hour`` best items of each of ``hours`` in ``scope``, with their distinct users, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.zrevrange(self._key(Feature.TRENDING_RANK, window_entity(scope, hour)), 0, per_hour - 1, withscores=True)
        return list(zip(hours, pipe.execute()))

    def hourly_trending(self, scope: str, item_ids: list[str], hours: int = 24,
                        now_ms: int | None = None) -> dict[str, list[int]]:
        """Per item, its distinct users in each of the last ``hours`` hours of ``scope``, oldest
        first: the counts each hour's trending ranking holds, in one round trip."""
        if not item_ids:
            return {}
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        now_hour = now_ms - now_ms % HOUR_MS
        pipe = self.client.pipeline(transaction=False)
        for hour in range(now_hour - (hours - 1) * HOUR_MS, now_hour + 1, HOUR_MS):
            pipe.zmscore(self._key(Feature.TRENDING_RANK, window_entity(scope, hour)), item_ids)
        per_hour = pipe.execute()
        return {item: [int(scores[n] or 0) for scores in per_hour] for n, item in enumerate(item_ids)}

    def suspects(self, scope: str = "global", min_events: int = 50, horizon_hours: int = 24,
                 now_ms: int | None = None) -> dict[str, int]:
        """Users with at least ``min_events`` engagements with one item within one hour of the
        horizon (bots, scripted accounts), with their largest such count. Trending counts each of
        them once per item and hour already; this says who they are. Reads whole hours: not for
        the request path."""
        now_ms = self.log_clock_ms() if now_ms is None else now_ms
        found: dict[str, int] = {}
        for h in range(horizon_hours):
            hour = now_ms - now_ms % HOUR_MS - h * HOUR_MS
            for field, count in self.client.hscan_iter(self._key(Feature.TRENDING, window_entity(scope, hour)), count=5000):
                if int(count) >= min_events:
                    user = field.split("|", 1)[1]
                    found[user] = max(found.get(user, 0), int(count))
        return found

    def similar(self, item_id: str, n: int = 20) -> list[tuple[str, float]]:
        """Items co-occurring with ``item_id`` in user sessions, by cosine: c(a,b) / sqrt(n(a) n(b)).

        Normalising by both occurrences keeps blockbusters from being "similar" to everything.
        The pairs are stored in order of c(a,b), so a read takes only the ``CANDIDATES_PER_NEIGHBOUR
        * n`` most frequent: its cost depends on ``n``, not on how many items ever met this one.
        An item outside them is left out even if its cosine would have placed it.
        """
        return self.similar_many([item_id], n)[0]

    def similar_many(self, item_ids: list[str], n: int = 20) -> list[list[tuple[str, float]]]:
        """``similar`` of each of ``item_ids``, in one round trip (one script)."""
        if not item_ids:
            return []
        keys = [self._key(Feature.OCCURRENCE, ""), *(self._key(Feature.COOCCURRENCE, item) for item in item_ids)]
        replies = self._neighbours(keys=keys, args=[CANDIDATES_PER_NEIGHBOUR * n, *item_ids])
        return [_cosines(flat, occurrences, n) for flat, occurrences in zip(replies[::2], replies[1::2])]

    def cooccurrence_support(self, item_id: str, others: list[str]) -> dict[str, int]:
        """How many session windows held ``item_id`` together with each of ``others``: the count
        behind ``similar``'s cosine."""
        if not others:
            return {}
        counts = self.client.zmscore(self._key(Feature.COOCCURRENCE, item_id), others)
        return {other: int(count or 0) for other, count in zip(others, counts)}

    def late_records(self) -> int:
        return sum(int(v) for v in self.client.hvals(self._key(Feature.LATE, topics.EVENTS)))


def _cosines(flat_pairs: list[str], occurrences: list[str | None], n: int) -> list[tuple[str, float]]:
    """The ``n`` best partners by cosine, from (partner, count, ...) and the occurrences of the item and each partner."""
    own = int(occurrences[0] or 0)
    if not own:
        return []
    scored = [(other, float(together) / math.sqrt(own * int(theirs)))
              for other, together, theirs in zip(flat_pairs[::2], flat_pairs[1::2], occurrences[1:]) if theirs]
    return heapq.nlargest(n, scored, key=itemgetter(1, 0))


def _user_stamp(version: str, history_size: int, newest: list[str], seen_size: int, seen_oldest: list[str],
                disliked_size: int, profile: list[str | None]) -> tuple:
    return (version, *map(str, (history_size, newest, seen_size, seen_oldest, disliked_size, profile)))


def _profile(values: list[str | None]) -> dict[str, str]:
    return {name: _latest_payload(v) if v is not None else "" for name, v in zip(PROFILE_FIELDS, values)}


def _disliked(states: dict[str, str]) -> set[str]:
    return {item for item, value in states.items() if _latest_payload(value) == "1"}


def _started(states: dict[str, str], low: float = 0.05, high: float = 0.95) -> list[tuple[str, float]]:
    started = []
    for item, value in states.items():
        order, fraction = value.split(layout.LATEST_SEPARATOR, 1)
        if low < float(fraction) < high:
            started.append((order, item, float(fraction)))
    return [(item, fraction) for _, item, fraction in sorted(started, reverse=True)]


def _history_entry(member: str) -> HistoryEntry:
    return HistoryEntry(*parse_history_member(member))


def _latest_payload(value: str) -> str:
    return value.split(layout.LATEST_SEPARATOR, 1)[1]
