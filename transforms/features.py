"""Every feature of one batch of the log: what the backfill and the stream job both run."""

from __future__ import annotations

import functools

import apache_beam as beam

from transforms.affinity import CategoryAffinity
from transforms.attribution import Responses, impression_mutations
from transforms.catalog import CatalogState
from transforms.config import FeatureConfig
from transforms.cooccurrence import Cooccurrence, SessionItemsLookup
from transforms.extract import ExtractMutations
from transforms.history import UserHistory
from transforms.lateness import Lateness
from transforms.mutations import CombineMutations
from transforms.popularity import ItemPopularity
from transforms.trending import Trending


PER_EVENT_FEATURES = (UserHistory, CategoryAffinity, ItemPopularity, Trending, Lateness, Responses)


class ComputeFeatures(beam.PTransform):
    """``{"events": PCollection[Interaction], "catalog": PCollection[CatalogEntry]}`` and optionally
    ``"impressions": PCollection[Impression]`` (one batch of each topic; the windowed features
    window by ``event_time`` themselves, so upstream timestamps do not matter) ->
    ``PCollection[Mutation]``, each mutation key at most once.
    Merging the outputs of consecutive batches gives the output of one pass over them all."""

    def __init__(self, config: FeatureConfig | None = None, prior_session_items: SessionItemsLookup | None = None):
        super().__init__()
        self._config = config or FeatureConfig()
        self._prior_session_items = prior_session_items

    def expand(self, topics):
        events, catalog = topics["events"], topics["catalog"]
        config = self._config
        # One pass for every per-event feature (see transforms/extract.py for why).
        per_event = [feature.extract for feature in PER_EVENT_FEATURES]
        features = (
            events | "PerEventFeatures" >> ExtractMutations(config, per_event),
            events | "Cooccurrence" >> Cooccurrence(config, self._prior_session_items),
            catalog | "CatalogState" >> CatalogState(),
        )
        if "impressions" in topics:
            shown = topics["impressions"] | "Shown" >> beam.FlatMap(functools.partial(impression_mutations, config)) | CombineMutations()
            features = (*features, shown)
        # Each transform has merged its own mutations, and no two transforms emit the same
        # feature, so the union already holds each key once: a final combine would only
        # re-key and re-shuffle every mutation of the batch.
        return features | "Flatten" >> beam.Flatten()
