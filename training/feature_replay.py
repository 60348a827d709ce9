"""The feature store as it stood for a part of the log: that part replayed through the feature pipeline.

An offline evaluation of what serving does must read features that know nothing of the
held-out records. So the part of the log the evaluation may see is written, in its original
log order and partitioning, to a private broker, and ``transforms.jobs.backfill`` (the very
pipeline the stack runs) builds a feature version from it in a private Redis. The user's own
log and store are never touched.

What is written back is what the pipeline reads of a record: an interaction's user, item,
type, value, event time, region and device, and every item's latest catalog version.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from featurestore.reader import FeatureReader
from streams import topics
from streams.producer import LogProducer
from streams.schema import CatalogEntry, CatalogEvent, Context, InteractionEvent
from training.data import Catalog, Interactions
from infra.private import private_stack
from transforms.jobs import backfill


@dataclass(frozen=True)
class ReplayedFeatures:
    redis_url: str
    version: str

    def reader(self) -> FeatureReader:
        return FeatureReader(self.redis_url, self.version)


@contextlib.contextmanager
def replayed_features(events: Interactions, catalog: Catalog | None) -> Iterator[ReplayedFeatures]:
    """The feature version of ``events`` and ``catalog`` alone, in a private Redis alive inside the block."""
    with private_stack() as stack:
        # Same partition count and key (the user) as the original log: every partition holds the
        # same records in the same order, so lateness is judged exactly as it was.
        topics.ensure_topics(stack.bootstrap, partitions=int(events.partitions.max(initial=0)) + 1)
        with LogProducer(stack.bootstrap) as producer:
            for entry in sorted(catalog.latest if catalog else (), key=lambda e: (e.partition, e.offset)):
                producer.send_catalog(catalog_event(entry), timestamp_ms=entry.created_at)
            for row in np.lexsort((events.offsets, events.partitions)):
                event = interaction_event(events, int(row))
                producer.send_interaction(event, timestamp_ms=event.event_time)
        version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
        yield ReplayedFeatures(stack.redis_url, version)


def interaction_event(events: Interactions, row: int) -> InteractionEvent:
    value = float(events.values[row])
    return InteractionEvent(
        user_id=events.user_ids[row],
        item_id=events.item_ids[row],
        event_type=events.event_types[row],
        value=None if math.isnan(value) else value,
        event_time=int(events.event_times[row]),
        context=Context(region=events.regions[row] or None, device=events.devices[row] or None),
    )


def catalog_event(entry: CatalogEntry) -> CatalogEvent:
    return CatalogEvent(item_id=entry.item_id, title=entry.title, categories=entry.categories, regions=entry.regions,
                        age_rating=entry.age_rating, created_at=entry.created_at, active=entry.active,
                        release_year=entry.release_year)
