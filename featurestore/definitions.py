"""What the feature store holds: every feature's name and how its batch values merge.

This is the contract between the Beam transforms (which emit ``Mutation``s) and a store
backend (which applies them). Every merge is associative and commutative, so applying the
mutations of any split of the log into batches, in any grouping, yields the same state as
one pass over the whole log: a replay and a continuous run agree by construction. Time
decay, top-N selection and normalisation are never stored; readers apply them to these
exact values (see ``featurestore.reader``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Op:
    """Merge operations. Values: COUNT int, MAX int, TOP float score, LATEST str payload, ADD ignored."""

    COUNT = "count"  # field += value; an ``order`` is the key's expiry in log time (a windowed key)
    ADD = "add"  # set union: field is a member
    TOP = "top"  # keep the ``limit`` members with the highest (score, member)
    LATEST = "latest"  # keep the payload with the greatest ``order`` (a fixed-width string)
    MAX = "max"  # field = max(field, value)
    # field "member|actor": field += value; the member's score in the entity's ranking (a ZSET
    # beside the HASH) is the number of its actors whose count stays below ``limit`` (the cap
    # past which an actor is taken for a bot). ``order`` holds the window's expiry in log time:
    # once the log clock passes it, both keys are compacted away.
    DISTINCT = "distinct"
    TALLY = "tally"  # member score += value, kept as a ZSET so a read takes the largest first


class Mutation(NamedTuple):
    op: str
    feature: str
    entity: str
    field: str
    value: int | float | str = 0
    # LATEST: compared as a string, so writers pad it to fixed width; DISTINCT: expiry ms;
    # ADD: "", an expiry ms (as for COUNT), or "partition\x1fcloses_at": a set that goes once that
    # partition's high water reaches it
    order: str = ""
    limit: int = 0  # TOP only: members kept per (feature, entity)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.op, self.feature, self.entity, self.field)


class Feature:
    """Feature names. Entity and field of each, and the op that merges it."""

    # user features, entity = user_id
    HISTORY = "history"  # TOP: member "item|event_type|event_time|partition|offset", score event_time
    SEEN = "seen"  # TOP: the items the user engaged with latest (impressions excluded), scored by that time
    DISLIKED = "disliked"  # LATEST: field item, payload "1" disliked / "0" liked again
    PROGRESS = "progress"  # LATEST: field item, payload watch fraction ("1" when complete)
    # LATEST: field "region" / "device", payload the value of the user's latest event that had one
    PROFILE = "profile"
    # COUNT: entity "user|bucket_start_ms", field item, value integer weight. Categories are joined
    # with the catalog at read time: a join while processing would depend on how the log was split.
    AFFINITY = "affinity"

    # item features, entity = item_id
    POPULARITY = "popularity"  # COUNT: entity "item|bucket_start_ms", field event_type
    CATALOG = "catalog"  # LATEST: entity "", field item, payload catalog JSON, order log position

    # trending, entity "<scope>|<bucket_start_ms>" with scope "global" or "region:<r>": DISTINCT,
    # field "item|user" -> the user's engagements with the item in that hour; its ranking
    # TRENDING_RANK holds item -> distinct users below the actor cap, so one actor moves an
    # item by 1 at most, and a bot not at all.
    TRENDING = "trending"
    TRENDING_RANK = "trending_rank"
    # ADD: entity "<bucket_start_ms>", member the scope "region:<r>" of every region with trending
    # counts in that hour, expiring with them: the regions that have lists, read without a scan
    # of the keyspace.
    TRENDING_SCOPES = "trending_scopes"

    # co-occurrence
    SESSION_ITEMS = "session_items"  # ADD: entity "user|window_start_ms", member item
    COOCCURRENCE = "cooc"  # TALLY: entity item a, member item b: windows holding both
    OCCURRENCE = "occ"  # COUNT: entity "", field item: windows holding it

    # log bookkeeping, entity = topic
    HIGH_WATER = "high_water"  # MAX: field partition, value max event_time seen in log order
    LATE = "late"  # COUNT: field partition, records too late for their event-time window


# Trending entities: one global scope and one per region.
GLOBAL_SCOPE = "global"
REGION_SCOPE_PREFIX = "region:"


def region_scope(region: str) -> str:
    return f"{REGION_SCOPE_PREFIX}{region}"


def window_entity(scope: str, bucket_start_ms: int) -> str:
    return f"{scope}|{bucket_start_ms}"


# -- the user tower's inputs: one definition, used by the Beam transform that maintains them
# (transforms/history.py), by FeatureReader (serving) and by the point-in-time training data
# builder (training/), so the model is trained on exactly what serving will read.

# HISTORY records every interaction but impressions (what we showed is not what the user did).
HISTORY_EXCLUDED_TYPES = frozenset({"impression"})
# Of the recorded interactions, these are no evidence the user wanted the item, so the tower's
# history skips them: an impression is what we showed, a dislike is the opposite of engagement.
NOT_ENGAGEMENT_TYPES = frozenset({"impression", "dislike"})
PROFILE_FIELDS = ("region", "device")
_MEMBER_SEPARATOR = "|"
_MEMBER_FORMAT = _MEMBER_SEPARATOR.join(("%s", "%s", "%d", "%d", "%d"))


def history_member(item_id: str, event_type: str, event_time: int, partition: int, offset: int) -> str:
    """A HISTORY zset member. Its score is ``event_time``; equal scores order by this string."""
    # printf-style: one formatting pass instead of three str() calls and a join; this runs per record.
    return _MEMBER_FORMAT % (item_id, event_type, event_time, partition, offset)


def parse_history_member(member: str) -> tuple[str, str, int]:
    """(item_id, event_type, event_time) of a HISTORY member."""
    item, event_type, event_time, _partition, _offset = member.rsplit(_MEMBER_SEPARATOR, 4)
    return item, event_type, int(event_time)


def timed_tower_history(entries: Iterable[tuple[str, str, int]], length: int) -> list[tuple[str, int]]:
    """The user tower's history from HISTORY entries ``(item_id, event_type, event_time)``, newest first,
    as ``(item_id, event_time)`` pairs.

    Engagements only, each item once at its most recent engagement (a re-watch moves an item
    to the front instead of filling the history with it), at most ``length`` items, newest first.
    The time is that most recent engagement's: the order-aware tower embeds how long ago it was.
    """
    items: dict[str, int] = {}
    for item, event_type, event_time in entries:
        if event_type not in NOT_ENGAGEMENT_TYPES and item not in items:
            items[item] = event_time
            if len(items) == length:
                break
    return list(items.items())


def tower_history(entries: Iterable[tuple[str, str]], length: int) -> list[str]:
    """``timed_tower_history``'s items alone, from ``(item_id, event_type)`` entries."""
    return [item for item, _ in timed_tower_history(((item, event_type, 0) for item, event_type in entries), length)]
