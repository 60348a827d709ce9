"""Attribution facts: both sides of the impression -> interaction join, as set members per (user, item, day).

The join itself runs when the facts are read (``featurestore/attribution.py`` says why): here
each impression adds one SHOWN member per item it showed, and each attributable interaction
one RESPONDED member. Set union commutes, so any split and order of the two topics gives the
same facts. Each day's sets expire ``attribution_retention_ms`` after it starts, in log time,
like every windowed feature, so the facts held do not grow with the log's length.
"""

from __future__ import annotations

from collections.abc import Iterator

from featurestore.attribution import (BUCKET_MS, RESPONDED, RESPONSE_TYPES, SHOWN, day_entity, responded_member,
                                      shown_member)
from featurestore.definitions import Mutation, Op
from streams.schema import Impression
from transforms.config import FeatureConfig
from transforms.extract import EventBatch, ExtractedFeature, bucket_start
from transforms.mutations import MergedMutations


def _day_and_expiry(config: FeatureConfig, event_time: int) -> tuple[int, str]:
    day = bucket_start(event_time, BUCKET_MS)
    return day, str(day + config.attribution_retention_ms)


def impression_mutations(config: FeatureConfig, impression: Impression) -> Iterator[Mutation]:
    day, expiry = _day_and_expiry(config, impression.event_time)
    for item_id, position, source in impression.items:
        member = shown_member(impression.event_time, impression.request_id, impression.bucket, position, source)
        yield Mutation(Op.ADD, SHOWN, day_entity(impression.user_id, item_id, day), member, order=expiry)


def add_responses(batch: EventBatch, merged: MergedMutations) -> None:
    for event in batch.events:
        if event.event_type in RESPONSE_TYPES:
            day, expiry = _day_and_expiry(batch.config, event.event_time)
            member = responded_member(event.event_time, event.event_type, event.request_id)
            merged.fields(Op.ADD, RESPONDED, day_entity(event.user_id, event.item_id, day), expiry)[member] = None


class Responses(ExtractedFeature):
    """RESPONDED ADD per (user, item, day): every attributable interaction, late ones included
    until their day expires."""

    extract = staticmethod(add_responses)
