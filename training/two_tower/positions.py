"""Training examples at every position of a user's log: one stretch of the log encoded once for many queries.

The per-example dataset (``train._dataset``) gives every positive its own copy of the 50-slot
history, so each history item is looked up and embedded once per query that shows it. Here a
user's positives are cut into chunks of consecutive queries, and each chunk carries the stretch
of the user's HISTORY records that its queries' histories come from (``SEQUENCE``) once; every
query then names its history slots by record position in that stretch (``SLOTS``, newest first,
-1 for padding) with each slot's age at that query's log time (``HISTORY_AGE``).

A plain causal prefix of the stretch would not be what serving reads: ``timed_tower_history``
drops repeats (keeping the newest engagement), skips non-engagements and sees only the last
``record_limit`` records. The slots are taken from ``UserLog.tower_history_records``, so every
query's history IS its point-in-time history; the causal mask is the slot list, and the age of
a key depends on its (query, key) pair.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from modelfiles.query import HISTORY_AGE, PAD, age_buckets, strings
from training.data import Interactions
from training.tower_inputs import UserLog
from training.two_tower.features import ItemFields, positive_features

SEQUENCE, SLOTS, QUERY_MASK = "sequence", "history_slots", "query_mask"
# Queries per chunk: with every record a positive (MovieLens) a chunk's stretch is this plus
# the record limit, so a few records are looked up per query instead of the history length.
CHUNK_QUERIES = 8
# A slot that holds no history item.
NO_SLOT = -1
# A chunk's features that are not one per query.
CHUNK_FEATURES = (SEQUENCE, SLOTS, HISTORY_AGE, QUERY_MASK)


def chunk_length(log: UserLog) -> int:
    """The longest stretch a chunk may carry: one query's history alone spans up to the record limit."""
    return log.record_limit + CHUNK_QUERIES


def _chunks(records: list[list[int]], max_stretch: int) -> list[list[int]]:
    """Consecutive queries (indices into ``records``) grouped while their records span under ``max_stretch``."""
    chunks: list[list[int]] = []
    span: list[int] = []  # the current chunk's lowest and highest record number, if any
    for query, history in enumerate(records):
        widened = [*span, *history]
        if chunks and len(chunks[-1]) < CHUNK_QUERIES and (not widened or max(widened) - min(widened) < max_stretch):
            chunks[-1].append(query)
        else:
            chunks.append([query])
            widened = list(history)
        span = [min(widened), max(widened)] if widened else []
    return chunks


def position_examples(train: Interactions, log: UserLog, history_len: int, fields: ItemFields,
                      max_categories: int) -> dict[str, np.ndarray]:
    """Chunks of every positive of ``train`` as ``[chunks, CHUNK_QUERIES, ...]`` query and item features
    (``QUERY_MASK`` false on padding), with their ``SEQUENCE`` stretch and ``SLOTS``."""
    rows_by_user: dict[str, list[int]] = defaultdict(list)
    for row, user in enumerate(train.user_ids.tolist()):
        rows_by_user[user].append(row)
    times = train.event_times.tolist()
    stretch = chunk_length(log)
    placements, sequences, slots, ages = [], [], [], []
    for user, rows in rows_by_user.items():
        records = [log.tower_history_records(user, history_len, times[row]) for row in rows]
        for chunk in _chunks(records, stretch):
            first = min((r for query in chunk for r in records[query]), default=0)
            sequence = np.full(stretch, PAD, dtype=object)
            chunk_slots = np.full((CHUNK_QUERIES, history_len), NO_SLOT, dtype=np.int64)
            chunk_ages = np.zeros((CHUNK_QUERIES, history_len), dtype=np.int64)
            for n, query in enumerate(chunk):
                history = records[query]
                for slot, record in enumerate(history):
                    sequence[record - first] = log.record_item(record)
                    chunk_slots[n, slot] = record - first
                chunk_ages[n, : len(history)] = age_buckets(times[rows[query]], [log.record_time(r) for r in history])
            placements.append([rows[query] for query in chunk] + [NO_SLOT] * (CHUNK_QUERIES - len(chunk)))
            sequences.append(sequence)
            slots.append(chunk_slots)
            ages.append(chunk_ages)
    placement = np.array(placements, dtype=np.int64).reshape(-1, CHUNK_QUERIES)
    per_query = positive_features(train, fields, max_categories)
    examples = {name: values[np.maximum(placement, 0)] for name, values in per_query.items()}
    examples[QUERY_MASK] = placement >= 0
    examples[SEQUENCE] = strings(np.array(sequences, dtype=object).reshape(-1, stretch))
    examples[SLOTS] = np.array(slots, dtype=np.int64).reshape(-1, CHUNK_QUERIES, history_len)
    examples[HISTORY_AGE] = np.array(ages, dtype=np.int64).reshape(-1, CHUNK_QUERIES, history_len)
    return examples
