"""Running several features' logic in one pass over a batch of events, merged within each bundle.

Each feature module defines an *extractor*: a function that adds the mutations of a whole
``EventBatch`` (a fetched batch of one partition's interactions, in log order) to a
``MergedMutations``. The batch computes the columns several features read (which records
are on time, their interest weights) once; the features add their values straight into the
merge, so an event costs a few dict updates, not a ``Mutation`` object and a Beam element per
value. Python Beam spends microseconds per element per stage, and a Python call per mutation
costs about as much: with ten features either overhead, not the feature logic, would set the
backfill rate.

Event-time buckets are the start of the event's ``FixedWindows(bucket)`` window, computed
inline (``event_time - event_time % bucket``) for the same reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from featurestore.definitions import Mutation
from streams.schema import Interaction
from transforms.config import FeatureConfig
from transforms.mutations import CombineMutations, MergedMutations


def is_late(event: Interaction, allowed_lateness_ms: int) -> bool:
    """Whether the record is too late for its event-time window.

    Judged against the record's ``log_watermark`` (the highest event time among the earlier
    records of its Kafka partition, set by the source), not a runner's watermark: the log
    fixes it, so every replay and every split of the log into batches judges a record alike.
    A record with no earlier record in its partition (log_watermark -1) is never late.
    """
    return event.event_time < event.log_watermark - allowed_lateness_ms


def bucket_start(event_time_ms: int, bucket_ms: int) -> int:
    return event_time_ms - event_time_ms % bucket_ms


class EventBatch:
    """Interactions extracted together, and the columns more than one feature reads, computed once."""

    def __init__(self, config: FeatureConfig, events: Sequence[Interaction]):
        self.config = config
        self.events = events

    @functools.cached_property
    def on_time(self) -> list[Interaction]:
        """The records on time for the windowed features (``is_late`` says which are not)."""
        lateness = self.config.allowed_lateness_ms
        return [event for event in self.events if event.event_time >= event.log_watermark - lateness]

    @functools.cached_property
    def engaged(self) -> list[tuple[Interaction, int]]:
        """The on-time records with a positive interest weight, with that weight."""
        weight = self.config.weight
        weighted = ((event, weight(event)) for event in self.on_time)
        return [(event, w) for event, w in weighted if w]

    @functools.cached_property
    def positive(self) -> list[Interaction]:
        """The on-time records that show interest (``FeatureConfig.is_positive``)."""
        is_positive = self.config.is_positive
        return [event for event, _ in self.engaged if is_positive(event)]


Extractor = Callable[[EventBatch, MergedMutations], None]


class _ExtractFn(beam.DoFn):
    """Extracts the events of a bundle in batches of ``BATCH`` and emits their merge at its end."""

    BATCH = 1_000

    def __init__(self, config: FeatureConfig, extractors: Sequence[Extractor]):
        self._config = config
        self._extractors = tuple(extractors)

    def start_bundle(self):
        self._merged = MergedMutations()
        self._pending: list[Interaction] = []

    def process(self, event: Interaction):
        self._pending.append(event)
        if len(self._pending) >= self.BATCH:
            self._extract()
        return ()  # the merged mutations leave in finish_bundle

    def _extract(self) -> None:
        batch = EventBatch(self._config, self._pending)
        for extract in self._extractors:
            extract(batch, self._merged)
        self._pending = []

    def finish_bundle(self):
        self._extract()
        # Mutations carry their event-time bucket in their field; they live in the global window.
        window, timestamp = GlobalWindow(), GlobalWindow().max_timestamp()
        for mutation in self._merged.mutations():
            yield WindowedValue(mutation, timestamp, (window,))
        self._merged = MergedMutations()


class ExtractMutations(beam.PTransform):
    """PCollection[Interaction] -> PCollection[Mutation] of every extractor, each key once."""

    def __init__(self, config: FeatureConfig, extractors: Sequence[Extractor]):
        super().__init__()
        self._config = config
        self._extractors = tuple(extractors)

    def expand(self, events):
        return (
            events
            | "Extract" >> beam.ParDo(_ExtractFn(self._config, self._extractors)).with_output_types(Mutation)
            | "Combine" >> CombineMutations()
        )


class ExtractedFeature(beam.PTransform):
    """A feature computed by one extractor, as a transform of its own.

    Subclasses set ``extract`` (an ``Extractor``); ``ComputeFeatures`` and the feature
    pipeline run all of them in one pass.
    """

    extract: Extractor

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self._config = config

    def expand(self, events):
        return events | "Extract" >> ExtractMutations(self._config, [type(self).extract])
