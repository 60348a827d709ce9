"""The user tower's inputs as numpy arrays, built the same way when training and when serving.

Both towers take raw strings (ids, region, device) and look them up inside the model, so the
exported user tower accepts exactly what serving has at request time. Padding is the empty
string: it is the lookups' mask token, so padded history slots drop out of the pooled embedding
instead of averaging in a fake item.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# What a history slot holds when the user has fewer earlier items than the history length.
PAD = ""

HOURS_PER_DAY = 24
MS_PER_HOUR = 3_600_000
# Time since an event, bucketed by whole log2 seconds: 1 is "under 3 seconds", 31 is "68 years or more".
AGE_BUCKETS = 32
# The youngest age is read as one second old, so bucket 0 is never given. A training example's
# history is strictly earlier than the example, so on a log that stamps whole seconds (MovieLens
# does) no history item is under a second old; a page requested at the user's last event sees
# that event at age 0, and the bucket would be one training never taught.
YOUNGEST_SECONDS = 1

# The user tower's inputs: the towers, the tf.data pipeline, the exported signature and serving name them so.
USER_ID, HISTORY, REGION, DEVICE, HOUR = "user_id", "history", "region", "device", "hour"
HISTORY_AGE = "history_age"
QUERY_FEATURES = (USER_ID, HISTORY, HISTORY_AGE, REGION, DEVICE, HOUR)
# The user tower's history encoders (training.two_tower.encoders), named here for the numpy tower
# and the search space, which load no TensorFlow.
MEAN, RECENCY, ATTENTION, GRU = "mean", "recency", "attention", "gru"
ENCODERS = (MEAN, RECENCY, ATTENTION, GRU)


def hour_of_day(event_times_ms: np.ndarray) -> np.ndarray:
    """UTC hour of day (0-23) of each event time."""
    return (np.asarray(event_times_ms, dtype=np.int64) // MS_PER_HOUR % HOURS_PER_DAY).astype(np.int64)


def age_buckets(reference_ms, event_times_ms) -> np.ndarray:
    """The bucket of each event's age at ``reference_ms`` (log time, never the wall clock): whole
    log2 seconds, so "a minute ago" and "an hour ago" differ as much as "a day" and "a month"."""
    seconds = (np.asarray(reference_ms, dtype=np.int64) - np.asarray(event_times_ms, dtype=np.int64)) // 1000
    return np.minimum(np.log2(np.maximum(seconds, YOUNGEST_SECONDS) + 1.0).astype(np.int64), AGE_BUCKETS - 1)


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
