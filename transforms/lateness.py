"""Late records: which ones are too late for the windowed features, how many there were, and
how far event time has got in each partition.

Lateness is judged against the record's ``log_watermark`` (the highest event time among the
earlier records of its Kafka partition, set by the source) rather than against a runner's
watermark: the log fixes it, so every replay and every split of the log into batches judges
each record the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from featurestore.definitions import Feature, Mutation, Op
from streams.schema import Interaction
from streams.topics import EVENTS
from transforms.config import FeatureConfig
from transforms.extract import ExtractedFeature, Extractor, is_late

__all__ = ["Lateness", "is_late", "log_progress_mutations"]


def log_progress_mutations(config: FeatureConfig, event: Interaction) -> Iterator[Mutation]:
    partition = str(event.partition)
    yield Mutation(Op.MAX, Feature.HIGH_WATER, EVENTS, partition, event.event_time)
    if is_late(event, config.allowed_lateness_ms):
        yield Mutation(Op.COUNT, Feature.LATE, EVENTS, partition, 1)


class Lateness(ExtractedFeature):
    """LATE: per partition, the records too late for the windowed features (counted, not lost
    silently). HIGH_WATER: per partition, the greatest event time of all records."""

    @staticmethod
    def extractor(config: FeatureConfig) -> Extractor:
        return functools.partial(log_progress_mutations, config)
