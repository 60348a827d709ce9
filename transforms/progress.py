"""Live progress of a running pipeline, visible to its driver on any runner.

Beam only reports metrics once a batch run ends, so workers add their record counts to a
Redis counter per bundle and the driver polls it for its progress bar. They count the
source's batched output: one element per fetched batch of records.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import redis


class _CountIntoRedis(beam.DoFn):
    FLUSH_EVERY = 5_000

    def __init__(self, redis_url: str, key: str):
        self.redis_url, self.key = redis_url, key

    def setup(self):
        self.client = redis.Redis.from_url(self.redis_url)

    def start_bundle(self):
        self.pending = 0

    def process(self, records: list):
        self.pending += len(records)
        if self.pending >= self.FLUSH_EVERY:
            self.finish_bundle()
        return ()  # a sink: nothing goes downstream

    def finish_bundle(self):
        if self.pending:
            self.client.incrby(self.key, self.pending)
            self.pending = 0


class ReportProgress(beam.PTransform):
    def __init__(self, redis_url: str, key: str):
        super().__init__()
        self.redis_url, self.key = redis_url, key

    def expand(self, records):
        return records | "CountIntoRedis" >> beam.ParDo(_CountIntoRedis(self.redis_url, self.key))


class ProgressBar:
    """A tqdm bar fed from the Redis counter by a background thread while the pipeline runs."""

    def __init__(self, redis_url: str, key: str, total: int, description: str):
        self.client = redis.Redis.from_url(redis_url)
        self.key, self.total, self.description = key, total, description
        self._stop = threading.Event()

    def __enter__(self):
        self.client.delete(self.key)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        from tqdm import tqdm

        with tqdm(total=self.total, desc=self.description, unit="ev", unit_scale=True) as bar:
            while not self._stop.wait(0.5):
                bar.n = int(self.client.get(self.key) or 0)
                bar.refresh()
            bar.n = int(self.client.get(self.key) or 0)
            bar.refresh()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.client.delete(self.key)
