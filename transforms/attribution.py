"""Attribution facts: both sides of the impression -> interaction join, as set members per (user, item).

The join itself runs when the facts are read (``featurestore/attribution.py`` says why): here
each impression adds one SHOWN member per item it showed, and each attributable interaction
one RESPONDED member. Set union commutes, so any split and order of the two topics gives the
same facts.
"""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.attribution import RESPONDED, RESPONSE_TYPES, SHOWN, pair_entity, responded_member, shown_member
from featurestore.definitions import Mutation, Op
from streams.schema import Impression
from transforms.extract import EventBatch, ExtractedFeature
from transforms.mutations import MergedMutations


def impression_mutations(impression: Impression) -> Iterator[Mutation]:
    for item_id, position, source in impression.items:
        member = shown_member(impression.event_time, impression.request_id, impression.bucket, position, source)
        yield Mutation(Op.ADD, SHOWN, pair_entity(impression.user_id, item_id), member)


def add_responses(batch: EventBatch, merged: MergedMutations) -> None:
    for event in batch.events:
        if event.event_type in RESPONSE_TYPES:
            member = responded_member(event.event_time, event.event_type, event.request_id)
            merged.fields(Op.ADD, RESPONDED, pair_entity(event.user_id, event.item_id))[member] = None


class Responses(ExtractedFeature):
    """RESPONDED ADD per (user, item): every attributable interaction, late ones included (a set has no window)."""

    extract = staticmethod(add_responses)
