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
from streams.schema import Impression, Interaction
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor


def impression_mutations(impression: Impression) -> Iterator[Mutation]:
    for item_id, position, source in impression.items:
        member = shown_member(impression.event_time, impression.request_id, impression.bucket, position, source)
        yield Mutation(Op.ADD, SHOWN, pair_entity(impression.user_id, item_id), member)


def response_mutations(event: Interaction) -> Iterator[Mutation]:
    if event.event_type in RESPONSE_TYPES:
        member = responded_member(event.event_time, event.event_type, event.request_id)
        yield Mutation(Op.ADD, RESPONDED, pair_entity(event.user_id, event.item_id), member)


class Responses(ExtractedFeature):
    """RESPONDED ADD per (user, item): every attributable interaction, late ones included (a set has no window)."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return response_mutations
