"""The Beam sink of the feature pipeline: stage a batch's mutations in Redis.

Staging only writes; merging into live state is the job driver's step after the pipeline
succeeded (``RedisFeatureStore.merge_batch``), which is what makes a batch all-or-nothing
on any runner: workers may retry bundles, the driver merges once.
"""

from __future__ import annotations

import apache_beam as beam

from featurestore.definitions import Mutation


class _StageMutations(beam.DoFn):
    def __init__(self, redis_url: str, version: str, batch: str):
        self.redis_url, self.version, self.batch = redis_url, version, batch
        self.staged = beam.metrics.Metrics.counter("kapparec.store", "mutations_staged")

    def setup(self):
        from featurestore.redis_store import RedisFeatureStore

        self.store = RedisFeatureStore(self.redis_url)

    def start_bundle(self):
        self.buffer: list[Mutation] = []

    def process(self, mutation: Mutation):
        self.buffer.append(mutation)
        if len(self.buffer) >= 20_000:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if self.buffer:
            self.staged.inc(self.store.stage(self.version, self.batch, self.buffer))
            self.buffer = []


class StageMutations(beam.PTransform):
    """PCollection[Mutation] -> staged in ``kr:<version>:stage:<batch>:*``."""

    def __init__(self, redis_url: str, version: str, batch: str):
        super().__init__()
        self.redis_url, self.version, self.batch = redis_url, version, batch

    def expand(self, mutations):
        return mutations | "Stage" >> beam.ParDo(_StageMutations(self.redis_url, self.version, self.batch))
