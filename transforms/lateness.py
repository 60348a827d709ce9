"""Late records: which ones are too late for the windowed features, how many there were, and
how far event time has got in each partition.

Lateness is judged against the record's ``log_watermark`` (the highest event time among the
earlier records of its Kafka partition, set by the source) rather than against a runner's
watermark: the log fixes it, so every replay and every split of the log into batches judges
each record the same way.
"""

from __future__ import annotations

from featurestore.definitions import Feature, Op
from streams.topics import EVENTS
from transforms.extract import EventBatch, ExtractedFeature, is_late
from transforms.mutations import MergedMutations

__all__ = ["Lateness", "is_late", "add_log_progress"]


def add_log_progress(batch: EventBatch, merged: MergedMutations) -> None:
    lateness = batch.config.allowed_lateness_ms
    high: dict[int, int] = {}
    late: dict[int, int] = {}
    for event in batch.events:
        partition = event.partition
        if partition not in high or event.event_time > high[partition]:
            high[partition] = event.event_time
        if is_late(event, lateness):
            late[partition] = late.get(partition, 0) + 1
    for partition, event_time in high.items():
        merged.add_max(Feature.HIGH_WATER, EVENTS, str(partition), event_time)
    for partition, count in late.items():
        merged.add_sum(Op.COUNT, Feature.LATE, EVENTS, str(partition), count, "")


class Lateness(ExtractedFeature):
    """LATE: per partition, the records too late for the windowed features (counted, not lost
    silently). HIGH_WATER: per partition, the greatest event time of all records."""

    extract = staticmethod(add_log_progress)
