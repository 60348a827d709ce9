"""Per-user state that needs no window: recent history, seen items, dislikes, watch progress.

These use every record, late or not: a late record is still part of what the user did, and
the LATEST order (event time, then log position) puts it in its place.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

from featurestore.definitions import HISTORY_EXCLUDED_TYPES, PROFILE_FIELDS, Feature, Mutation, Op
from featurestore.definitions import history_member as _member
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


def history_member(event: Interaction) -> str:
    return _member(event.item_id, event.event_type, event.event_time, event.partition, event.offset)


def _disliked_state(event: Interaction) -> str | None:
    if event.event_type == "dislike":
        return "1"
    if event.event_type == "like" or (event.event_type == "rate" and event.value >= LIKING_RATING):
        return "0"
    return None


def _progress_state(event: Interaction) -> str | None:
    if event.event_type == "progress":
        return str(event.value)
    if event.event_type == "complete":
        return _COMPLETE_STATE
    if event.event_type == "play":
        return _PLAY_STATE
    return None


def add_user_state(batch: EventBatch, merged: MergedMutations) -> None:
    """HISTORY, SEEN, DISLIKED, PROGRESS and PROFILE of every record of ``batch``."""
    limit, add_latest, add_top, fields = batch.config.history_length, merged.add_latest, merged.add_top, merged.fields
    for event in batch.events:
        user, item = event.user_id, event.item_id
        order = None  # the LATEST order, formatted once and only if a LATEST needs it
        # Impressions carry the request's context too, so they count for where the user comes from.
        for name, value in zip(PROFILE_FIELDS, _profile(event)):
            if value:
                order = order or log_order(event)
                add_latest(Feature.PROFILE, user, name, order, value)
        if event.event_type in HISTORY_EXCLUDED_TYPES:
            continue
        add_top(Feature.HISTORY, user, history_member(event), float(event.event_time), limit)
        fields(Op.ADD, Feature.SEEN, user)[item] = None
        disliked = _disliked_state(event)
        if disliked is not None:
            add_latest(Feature.DISLIKED, user, item, order or log_order(event), disliked)
        progress = _progress_state(event)
        if progress is not None:
            add_latest(Feature.PROGRESS, user, item, order or log_order(event), progress)


def user_state_mutations(config: FeatureConfig, event: Interaction) -> Iterator[Mutation]:
    """The user-state mutations of one event (``add_user_state`` of a batch of one)."""
    merged = MergedMutations()
    add_user_state(EventBatch(config, [event]), merged)
    return merged.mutations()


class UserHistory(ExtractedFeature):
    """HISTORY TOP (the ``history_length`` latest interactions), SEEN ADD (items interacted
    with), DISLIKED LATEST ("1"/"0") and PROGRESS LATEST (watch fraction) per user, from every
    non-impression record; PROFILE LATEST (region, device) from every record that has them."""

    extract = staticmethod(add_user_state)
