"""The feature pipeline: the log, through every feature, committed into the store per bundle.

Backfill and the continuous job build exactly this pipeline; only the source's bounds differ
(a backfill reads fixed ranges into a fresh version, the continuous job follows the log from
the committed offsets), so stream == backfill holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam

from streams import topics
from streams.schema import parse_catalog, parse_impression, parse_interaction
from streams.source import RECORDS, ReadFromKafka, StopSignal
from transforms.bundled import CommitFeatures, CommitTarget
from transforms.commit_caps import DEFAULT_MAX_KEYS
from transforms.config import FeatureConfig
from transforms.progress import ReportProgress

Ranges = dict[int, tuple[int, int]]
# How long an idle round of the followed read waits for records (``streams.follow_fetch``): the
# wait ends as soon as records come, so it costs no latency, and a longer one spares the CPU
# an idle job spends on rounds; it is also the resume delay of an idle partition.
FOLLOW_POLL_TIMEOUT_MS = 100
# How long the broker holds an empty fetch: the waiting poll sends the next one as it returns,
# so this, not the poll's wait, bounds how late a record's arrival is noticed.
FOLLOW_CONSUMER_CONFIG = {"fetch_max_wait_ms": 25}


@dataclass(frozen=True)
class BatchPlan:
    """Which offsets of the log a bounded run reads: [start, stop) per partition of each topic."""

    events: Ranges
    items: Ranges
    # The event-time high water each events partition had before ``start`` (log-order lateness).
    high_water: dict[int, int] = field(default_factory=dict)
    impressions: Ranges = field(default_factory=dict)

    def ranges(self) -> dict[str, Ranges]:
        return {topics.EVENTS: self.events, topics.ITEMS: self.items, topics.IMPRESSIONS: self.impressions}

    @property
    def records(self) -> int:
        return sum(stop - start for ranges in self.ranges().values() for start, stop in ranges.values())

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return {(topic, p): stop for topic, ranges in self.ranges().items() for p, (_, stop) in ranges.items()}


@dataclass(frozen=True)
class FollowPlan:
    """Where a continuous run starts: the committed offsets (and high water), read on forever."""

    events: dict[int, int]
    items: dict[int, int]
    high_water: dict[int, int]
    stop: StopSignal
    impressions: dict[int, int] = field(default_factory=dict)  # empty: the log has no impressions topic


@dataclass(frozen=True)
class CommitSettings:
    """Where commits go and how large one may grow."""

    target: CommitTarget
    max_records: int | None = None
    progress_key: str | None = None
    max_keys: int = DEFAULT_MAX_KEYS


def build_feature_pipeline(
    pipeline: beam.Pipeline,
    bootstrap: str,
    plan: BatchPlan | FollowPlan,
    commits: CommitSettings,
    config: FeatureConfig,
) -> None:
    if isinstance(plan, FollowPlan):
        follow = {"follow": True, "poll_timeout_ms": FOLLOW_POLL_TIMEOUT_MS, "stop": plan.stop,
                  "consumer_config": FOLLOW_CONSUMER_CONFIG}
        events_read, items_read = {**follow, "start_offsets": plan.events}, {**follow, "start_offsets": plan.items}
        impressions_read = {**follow, "start_offsets": plan.impressions}
    else:
        events_read, items_read = {"ranges": plan.events}, {"ranges": plan.items}
        impressions_read = {"ranges": plan.impressions}
    # Batched: one element per fetched batch, which the features take whole.
    events = ReadFromKafka(bootstrap, topics.EVENTS, parse_interaction, start_high_water=plan.high_water, batched=True,
                           **events_read)
    read = events.and_topic(ReadFromKafka(bootstrap, topics.ITEMS, parse_catalog, batched=True, **items_read))
    if plan.impressions:
        read = read.and_topic(ReadFromKafka(bootstrap, topics.IMPRESSIONS, parse_impression, batched=True,
                                            **impressions_read))
    log = pipeline | "ReadLog" >> read
    # Batched: each batch carries its dead letters, which the commit covering them writes first.
    _ = log[RECORDS] | "Features" >> CommitFeatures(
        commits.target, config, max_records=commits.max_records, max_keys=commits.max_keys
    )
    if commits.progress_key:
        _ = log[RECORDS] | "Progress" >> ReportProgress(commits.target.redis_url, commits.progress_key)
