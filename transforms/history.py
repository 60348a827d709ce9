"""Per-user state that needs no window: recent history, seen items, dislikes, watch progress.

These use every record, late or not: a late record is still part of what the user did, and
the LATEST order (event time, then log position) puts it in its place.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from featurestore.definitions import HISTORY_EXCLUDED_TYPES, PROFILE_FIELDS, Feature, Mutation, Op
from featurestore.definitions import history_member as _member
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor
from transforms.mutations import log_order

# A rating at least this high takes an earlier dislike back, like a "like" does.
LIKING_RATING = 4.0

# The watch state each playback event leaves. A play restarts at "0" only if no later
# progress or completion exists: LATEST keeps the state with the greatest log order.
_COMPLETE_STATE = "1"
_PLAY_STATE = "0"


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


def user_state_mutations(config: FeatureConfig, event: Interaction) -> Iterator[Mutation]:
    user, item = event.user_id, event.item_id
    # Impressions carry the request's context too, so they count for where the user comes from.
    for name in PROFILE_FIELDS:
        value = getattr(event, name)
        if value:
            yield Mutation(Op.LATEST, Feature.PROFILE, user, name, value, order=log_order(event))
    if event.event_type in HISTORY_EXCLUDED_TYPES:
        return
    yield Mutation(Op.TOP, Feature.HISTORY, user, history_member(event), float(event.event_time), limit=config.history_length)
    yield Mutation(Op.ADD, Feature.SEEN, user, item)
    disliked = _disliked_state(event)
    if disliked is not None:
        yield Mutation(Op.LATEST, Feature.DISLIKED, user, item, disliked, order=log_order(event))
    progress = _progress_state(event)
    if progress is not None:
        yield Mutation(Op.LATEST, Feature.PROGRESS, user, item, progress, order=log_order(event))


class UserHistory(ExtractedFeature):
    """HISTORY TOP (the ``history_length`` latest interactions), SEEN ADD (items interacted
    with), DISLIKED LATEST ("1"/"0") and PROGRESS LATEST (watch fraction) per user, from every
    non-impression record; PROFILE LATEST (region, device) from every record that has them."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return functools.partial(user_state_mutations, config)
