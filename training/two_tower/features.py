"""Raw features of the two towers as numpy arrays, built from the replayed log and the catalog.

Both towers take raw strings (ids, categories, region, device) and look them up inside the model,
so the exported user tower accepts exactly what serving has at request time. Padding is the
empty string: it is the lookups' mask token, so padded history slots and missing categories
drop out of the pooled embeddings instead of averaging in a fake item.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from training.data import PADDING as PAD

HOURS_PER_DAY = 24
MS_PER_HOUR = 3_600_000
# Time since an event, bucketed by whole log2 seconds: 0 is "under a second", 31 is "68 years or more".
AGE_BUCKETS = 32

# Feature names shared by the towers, the tf.data pipeline and the exported signature.
USER_ID, HISTORY, REGION, DEVICE, HOUR = "user_id", "history", "region", "device", "hour"
HISTORY_AGE = "history_age"
ITEM_ID, CATEGORIES, ITEM_PROBABILITY = "item_id", "categories", "item_probability"
QUERY_FEATURES = (USER_ID, HISTORY, HISTORY_AGE, REGION, DEVICE, HOUR)
# The user tower's history encoders (training.two_tower.encoders), named here for the numpy tower
# and the search space, which load no TensorFlow.
MEAN, ATTENTION, GRU = "mean", "attention", "gru"
ENCODERS = (MEAN, ATTENTION, GRU)


def hour_of_day(event_times_ms: np.ndarray) -> np.ndarray:
    """UTC hour of day (0-23) of each event time."""
    return (np.asarray(event_times_ms, dtype=np.int64) // MS_PER_HOUR % HOURS_PER_DAY).astype(np.int64)


def age_buckets(reference_ms, event_times_ms) -> np.ndarray:
    """The bucket of each event's age at ``reference_ms`` (log time, never the wall clock): whole
    log2 seconds, so "a minute ago" and "an hour ago" differ as much as "a day" and "a month"."""
    seconds = np.maximum(np.asarray(reference_ms, dtype=np.int64) - np.asarray(event_times_ms, dtype=np.int64), 0) // 1000
    return np.minimum(np.log2(seconds + 1.0).astype(np.int64), AGE_BUCKETS - 1)


def timed_rows(histories: Sequence[Sequence[tuple[str, int]]], references_ms: Sequence[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """``[rows, width]`` items and age buckets of ``(item, event time)`` histories, each aged at its
    reference time; padding has age bucket 0 (the tower masks it by the item)."""
    items = pad_rows([[item for item, _ in history] for history in histories], width)
    ages = np.zeros((len(histories), width), dtype=np.int64)
    for row, (history, reference) in enumerate(zip(histories, references_ms)):
        times = [time for _, time in history[:width]]
        ages[row, : len(times)] = age_buckets(reference, times)
    return items, ages


def pad_rows(rows: Sequence[Sequence[str]], width: int) -> np.ndarray:
    """A ``[len(rows), width]`` string matrix of each row's first ``width`` entries, padded with ``PAD``."""
    out = np.full((len(rows), width), PAD, dtype=object)
    for i, row in enumerate(rows):
        row = list(row)[:width]
        if row:
            out[i, : len(row)] = row
    return out


def strings(values: np.ndarray) -> np.ndarray:
    """Object arrays of ``str`` as fixed-width unicode, which TensorFlow converts to ``tf.string``."""
    return np.asarray(values, dtype=object).astype(str)


@dataclass(frozen=True)
class Vocabularies:
    """What the lookups know; anything else lands in hashed out-of-vocabulary buckets."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    devices: tuple[str, ...]

    @classmethod
    def build(cls, user_ids, item_ids, regions, devices, item_categories: Mapping[str, Sequence[str]]) -> "Vocabularies":
        def known(values) -> tuple[str, ...]:
            # Sorted so the same data always gives the same lookup indices (determinism).
            return tuple(sorted({str(v) for v in values} - {PAD}))

        categories = (c for item in set(item_ids) for c in item_categories.get(item, ()))
        return cls(known(user_ids), known(item_ids), known(categories), known(regions), known(devices))


def item_sampling_probability(train_item_ids: np.ndarray) -> dict[str, float]:
    """Each item's share of training positives: the in-batch sampling probability logQ corrects for."""
    counts = Counter(train_item_ids.tolist())
    total = sum(counts.values())
    return {item: count / total for item, count in counts.items()}


def item_features(item_ids: Sequence[str], item_categories: Mapping[str, Sequence[str]], max_categories: int) -> dict[str, np.ndarray]:
    """Item-tower inputs for the given items; items absent from the catalog get no categories."""
    cats = pad_rows([item_categories.get(item, ()) for item in item_ids], max_categories)
    return {ITEM_ID: strings(np.asarray(item_ids, dtype=object)), CATEGORIES: strings(cats)}


def query_features(user_ids, histories: np.ndarray, ages: np.ndarray, regions, devices, hours) -> dict[str, np.ndarray]:
    """User-tower inputs: one row per query; ``histories`` most recent first, padded to the history
    length, ``ages`` their age buckets (``timed_rows``)."""
    return {
        USER_ID: strings(user_ids),
        HISTORY: strings(histories),
        HISTORY_AGE: np.asarray(ages, dtype=np.int64),
        REGION: strings(regions),
        DEVICE: strings(devices),
        HOUR: np.asarray(hours, dtype=np.int64),
    }
