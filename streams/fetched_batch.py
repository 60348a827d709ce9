"""The batched source's element: one fetched batch of one partition's valid records, in log order,
and the dead letters of the same fetch.

A ``list`` as far as its consumers go. It exists for its coder: Beam samples the byte size of
the elements each stage emits (for its metrics) by encoding them, and with the default pickle
coder a sampled batch of 20,000 interactions was pickled whole, about 0.1 s each time, on the
source's thread. ``FetchedBatchCoder`` estimates the size from the record count instead; it
still pickles a batch where one really crosses a stage boundary (a runner that does not fuse).
"""

from __future__ import annotations

import pickle

import apache_beam as beam

# A record's size as the estimate counts it: about what a pickled interaction takes.
ESTIMATED_RECORD_BYTES = 160


class FetchedBatch(list):
    """One fetched batch of one partition's valid records, in log order; ``letters``: the batch's
    records that failed validation, as ``DeadLetter``s in log order."""

    def __init__(self, records=(), letters=()):
        super().__init__(records)
        self.letters = list(letters)


class FetchedBatchCoder(beam.coders.Coder):
    def encode(self, batch: FetchedBatch) -> bytes:
        return pickle.dumps((list(batch), batch.letters), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> FetchedBatch:
        return FetchedBatch(*pickle.loads(encoded))

    def estimate_size(self, batch: FetchedBatch) -> int:
        return (len(batch) + len(batch.letters)) * ESTIMATED_RECORD_BYTES

    def is_deterministic(self) -> bool:
        return False  # pickle is not: a batch is never a key

    def to_type_hint(self):
        return FetchedBatch


beam.coders.registry.register_coder(FetchedBatch, FetchedBatchCoder)
