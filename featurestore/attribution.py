"""Attribution: which shown items a user then engaged with, as facts the store merges and a join over them.

Impressions (topic ``impressions``) and interactions (topic ``events``) arrive in no fixed order
relative to each other: a stream job may see a click before the impression it answers, a replay
the other way round. So the pipeline does not join them. It records both sides as set members
per (user, item) pair and day, a merge that commutes (``transforms/attribution.py``):

- SHOWN:     entity ``user|item|day``, member ``[event_time, request_id, bucket, position, source]``;
- RESPONDED: entity ``user|item|day``, member ``[event_time, event_type, request_id]`` for every
  attributable interaction (``RESPONSE_TYPES``).

Days expire in log time like every windowed feature, and ``attribute`` joins a pair's days when
they are read. The store is a function of the log and the
join a function of the store, so the experiment report after a stream run equals the report
after a backfill, whatever the order either saw.

The join: each response goes to one impression of its pair, the one with its ``request_id``
when the interaction carried one that was shown, else the latest impression at most
``window_ms`` before it. An impression is *clicked* when any response went to it, and
*converted* when a conversion did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import redis

from featurestore import layout
from kapparec.timeunits import DAY_MS

SHOWN = "shown"
RESPONDED = "responded"
CLICK_TYPES = frozenset({"click", "play"})
CONVERSION_TYPES = frozenset({"complete", "add_to_cart", "purchase"})
RESPONSE_TYPES = CLICK_TYPES | CONVERSION_TYPES
DEFAULT_WINDOW_MS = 30 * 60 * 1000
_READ_BATCH = 500


# The facts are bucketed by day, so that each day's sets expire on their own.
BUCKET_MS = DAY_MS


def day_entity(user_id: str, item_id: str, day_ms: int) -> str:
    return f"{user_id}|{item_id}|{day_ms}"


def _compact(values: list) -> str:
    # orjson writes what json.dumps(ensure_ascii=False, compact) writes, ten times faster (this runs
    # per response); only an integer past 64 bits, which the log's contract does not bound, needs json.
    try:
        return orjson.dumps(values).decode()
    except orjson.JSONEncodeError:
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def shown_member(event_time: int, request_id: str, bucket: str, position: int, source: str) -> str:
    return _compact([event_time, request_id, bucket, position, source])


def responded_member(event_time: int, event_type: str, request_id: str) -> str:
    return _compact([event_time, event_type, request_id])


@dataclass(frozen=True)
class Shown:
    user_id: str
    item_id: str
    event_time: int
    request_id: str
    bucket: str
    position: int
    source: str


@dataclass(frozen=True)
class Outcome:
    """One shown item and what the user did about it."""

    shown: Shown
    clicked: bool
    converted: bool


def attribute(shown: list[Shown], responses: list[tuple[int, str, str]], window_ms: int) -> list[Outcome]:
    """Join one (user, item) pair's impressions with its responses ``(event_time, event_type, request_id)``."""
    ordered = sorted(shown, key=lambda s: (s.event_time, s.request_id))
    by_request = {s.request_id: s for s in ordered}
    clicked, converted = set(), set()
    for event_time, event_type, request_id in responses:
        target = by_request.get(request_id) if request_id else None
        if target is None:
            target = next((s for s in reversed(ordered) if s.event_time <= event_time <= s.event_time + window_ms), None)
        if target is not None:
            clicked.add(target.request_id)
            if event_type in CONVERSION_TYPES:
                converted.add(target.request_id)
    return [Outcome(s, s.request_id in clicked, s.request_id in converted) for s in ordered]


def read_outcomes(redis_url: str, version: str, window_ms: int = DEFAULT_WINDOW_MS) -> Iterator[Outcome]:
    """Every impression of ``version`` with its outcome, pair by pair (a scan of the SHOWN and RESPONDED keys)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    shown_days = _days_by_pair(client, version, SHOWN)
    # Only a shown pair's responses can be attributed, so the others are not held.
    responded_days = _days_by_pair(client, version, RESPONDED, among=shown_days)
    pairs = list(shown_days)
    for start in range(0, len(pairs), _READ_BATCH):
        yield from _outcomes_of(client, version, pairs[start:start + _READ_BATCH], shown_days, responded_days, window_ms)


def _days_by_pair(client: redis.Redis, version: str, feature: str,
                  among: dict | None = None) -> dict[tuple[str, str], list[int]]:
    """The days ``feature`` holds per (user, item) pair (``among``: only for those pairs)."""
    prefix = layout.feature_key(version, feature, "")[: -len(layout.EMPTY_ENTITY)]
    days: dict[tuple[str, str], list[int]] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        user_id, item_id, day = key[len(prefix):].rsplit("|", 2)
        if among is None or (user_id, item_id) in among:
            days.setdefault((user_id, item_id), []).append(int(day))
    return days


def _outcomes_of(client: redis.Redis, version: str, pairs: list[tuple[str, str]], shown_days: dict,
                 responded_days: dict, window_ms: int) -> Iterator[Outcome]:
    """The outcomes of ``pairs``: each pair's impressions of every day joined with its responses of every day."""
    pipe = client.pipeline(transaction=False)
    for pair in pairs:
        for feature, days in ((SHOWN, shown_days), (RESPONDED, responded_days)):
            for day in days.get(pair, ()):
                pipe.smembers(layout.feature_key(version, feature, day_entity(*pair, day)))
    replies = iter(pipe.execute())
    for pair in pairs:
        shown = [Shown(*pair, *json.loads(member)) for _ in shown_days[pair] for member in next(replies)]
        responses = [tuple(json.loads(member)) for _ in responded_days.get(pair, ()) for member in next(replies)]
        yield from attribute(shown, responses, window_ms)
