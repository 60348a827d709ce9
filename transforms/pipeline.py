"""The feature pipeline: one batch of the log, through every feature transform, into the store.

Backfill and the continuous job build exactly this pipeline; they differ only in the
offset ranges of the plan, the version they write and how the driver merges the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam

from featurestore.beam_sink import StageMutations
from streams import topics
from streams.dlq import WriteDeadLetters
from streams.schema import parse_catalog, parse_interaction
from streams.source import DEAD_LETTER, RECORDS, ReadFromKafka
from transforms.config import FeatureConfig
from transforms.features import ComputeFeatures
from transforms.progress import ReportProgress

Ranges = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class BatchPlan:
    """Which offsets of the log one batch reads: [start, stop) per partition of each topic."""

    events: Ranges
    items: Ranges
    # The event-time high water each events partition had before ``start`` (log-order lateness).
    high_water: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(stop - start for start, stop in (*self.events.values(), *self.items.values()))

    def end_offsets(self) -> dict[tuple[str, int], int]:
        ends = {(topics.EVENTS, p): stop for p, (_, stop) in self.events.items()}
        ends.update({(topics.ITEMS, p): stop for p, (_, stop) in self.items.items()})
        return ends


@dataclass(frozen=True)
class BatchTarget:
    """Where a batch's mutations go: the store, the version and the batch's stage id."""

    redis_url: str
    version: str
    batch: str
    progress_key: str | None = None


def build_feature_pipeline(
    pipeline: beam.Pipeline,
    bootstrap: str,
    plan: BatchPlan,
    target: BatchTarget,
    config: FeatureConfig,
    prior_session_items=None,
) -> None:
    events = pipeline | "ReadEvents" >> ReadFromKafka(
        bootstrap, topics.EVENTS, parse_interaction, ranges=plan.events, start_high_water=plan.high_water
    )
    catalog = pipeline | "ReadItems" >> ReadFromKafka(bootstrap, topics.ITEMS, parse_catalog, ranges=plan.items)
    (
        (events[DEAD_LETTER], catalog[DEAD_LETTER])
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(bootstrap)
    )
    if target.progress_key:
        _ = events[RECORDS] | "Progress" >> ReportProgress(target.redis_url, target.progress_key)
    (
        {"events": events[RECORDS], "catalog": catalog[RECORDS]}
        | "Features" >> ComputeFeatures(config, prior_session_items=prior_session_items)
        | "Store" >> StageMutations(target.redis_url, target.version, target.batch)
    )
