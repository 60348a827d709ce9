"""Per-user state that needs no window: recent history, seen items, dislikes, watch progress.

These use every record, late or not: a late record is still part of what the user did, and
the LATEST order (event time, then log position) puts it in its place.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

from featurestore.definitions import HISTORY_EXCLUDED_TYPES, PROFILE_FIELDS, Feature, Mutation
from featurestore.definitions import history_member
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import EventBatch, ExtractedFeature
from transforms.mutations import MergedMutations, log_order

# A rating at least this high takes an earlier dislike back, like a "like" does.
LIKING_RATING = 4.0

# The watch state each playback event leaves. A play restarts at "0" only if no later
# progress or completion exists: LATEST keeps the state with the greatest log order.
_COMPLETE_STATE = "1"
_PLAY_STATE = "0"
_profile = operator.attrgetter(*PROFILE_FIELDS)


def _disliked_state(event: Interaction) -> str | None:
    if event.event_type == "dislike":
        return "1"
    if event.event_type == "like" or (event.event_type == "rate" and event.value >= LIKING_RATING):
        return "0"
    return None


def _progress_state(event: Interaction) -> str | None:
    if event.event_type == "progress":
        return str(event.value)
    return _PLAYBACK_STATES.get(event.event_type)


_PLAYBACK_STATES = {"complete": _COMPLETE_STATE, "play": _PLAY_STATE}
# The event types that leave a DISLIKED or a PROGRESS state: the others skip both lookups.
_STATEFUL_TYPES = frozenset({"dislike", "like", "rate", "progress", *_PLAYBACK_STATES})


def add_user_state(batch: EventBatch, merged: MergedMutations) -> None:
    """HISTORY, SEEN, DISLIKED, PROGRESS and PROFILE of every record of ``batch``."""
    limit, seen_limit = batch.config.history_length, batch.config.seen_limit
    add_latest, add_top = merged.add_latest, merged.add_top
    profile, history, seen = Feature.PROFILE, Feature.HISTORY, Feature.SEEN  # looked up once: this loop runs per record
    for event in batch.events:
        user, item, event_type = event.user_id, event.item_id, event.event_type
        order = log_order(event)  # the LATEST order; nearly every record has a profile field
        # Impressions carry the request's context too, so they count for where the user comes from.
        for name, value in zip(PROFILE_FIELDS, _profile(event)):
            if value:
                add_latest(profile, user, name, order, value)
        if event_type in HISTORY_EXCLUDED_TYPES:
            continue
        score = float(event.event_time)
        member = history_member(item, event_type, event.event_time, event.partition, event.offset)
        add_top(history, user, member, score, limit)
        add_top(seen, user, item, score, seen_limit)
        if event_type in _STATEFUL_TYPES:
            disliked = _disliked_state(event)
            if disliked is not None:
                add_latest(Feature.DISLIKED, user, item, order, disliked)
            progress = _progress_state(event)
            if progress is not None:
                add_latest(Feature.PROGRESS, user, item, order, progress)


def user_state_mutations(config: FeatureConfig, event: Interaction) -> Iterator[Mutation]:
    """The user-state mutations of one event (``add_user_state`` of a batch of one)."""
    merged = MergedMutations()
    add_user_state(EventBatch(config, [event]), merged)
    return merged.mutations()


class UserHistory(ExtractedFeature):
    """HISTORY TOP (the ``history_length`` latest interactions), SEEN TOP (the ``seen_limit``
    items engaged with latest, each scored by its latest engagement), DISLIKED LATEST ("1"/"0") and PROGRESS LATEST (watch fraction) per user, from every
    non-impression record; PROFILE LATEST (region, device) from every record that has them."""

    extract = staticmethod(add_user_state)
