"""Raw features of the two towers as numpy arrays, built from the replayed log and the catalog.

Both towers take raw strings (ids, categories, region, device) and look them up inside the model,
so the exported user tower accepts exactly what serving has at request time. Padding is the
empty string: it is the lookups' mask token, so padded history slots and missing categories
drop out of the pooled embeddings instead of averaging in a fake item.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
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
RELEASE_YEAR, TITLE_TOKENS = "release_year", "title_tokens"
QUERY_FEATURES = (USER_ID, HISTORY, HISTORY_AGE, REGION, DEVICE, HOUR)
# The user tower's history encoders (training.two_tower.encoders), named here for the numpy tower
# and the search space, which load no TensorFlow.
MEAN, ATTENTION, GRU = "mean", "attention", "gru"
ENCODERS = (MEAN, ATTENTION, GRU)


# Release years in five-year buckets from 1920 (earlier years share the first, later than 2030
# the last); bucket 0 is "unknown", an item whose catalog record gives no year.
UNKNOWN_YEAR, FIRST_BUCKETED_YEAR, YEARS_PER_BUCKET, DATED_YEAR_BUCKETS = 0, 1920, 5, 23
YEAR_BUCKETS = 1 + DATED_YEAR_BUCKETS
MAX_TITLE_TOKENS = 8
# A title token is a vocabulary entry only if this many training items' titles hold it: a word
# of one title says no more than that item's id, and the rest share the lookup's OOV bucket.
MIN_TITLE_TOKEN_ITEMS = 2
_WORD = re.compile(r"[^\W_]+")


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


def release_year_buckets(years: Sequence[int | None]) -> np.ndarray:
    """The bucket of each release year, ``UNKNOWN_YEAR`` where it is None."""
    known = np.array([year is not None for year in years], dtype=bool)
    dated = np.array([year if year is not None else FIRST_BUCKETED_YEAR for year in years], dtype=np.int64)
    buckets = 1 + np.clip((dated - FIRST_BUCKETED_YEAR) // YEARS_PER_BUCKET, 0, DATED_YEAR_BUCKETS - 1)
    return np.where(known, buckets, UNKNOWN_YEAR).astype(np.int64)


def title_tokens(title: str, release_year: int | None = None) -> list[str]:
    """The title's distinct lower-case words in order; the release year is its own feature, so a
    title that repeats it ("Heat (1995)") does not count it again."""
    skipped = {str(release_year)} if release_year is not None else set()
    return [word for word in dict.fromkeys(_WORD.findall(title.lower())) if word not in skipped]


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
class ItemFields:
    """The catalog fields the item tower reads, per item id, as the replayed catalog has them;
    an item the catalog lacks has none of them."""

    categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    release_years: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, catalog) -> "ItemFields":
        """From a ``training.data.Catalog`` (None: a log without a catalog)."""
        if catalog is None:
            return cls()
        return cls(dict(catalog.categories), dict(catalog.titles), dict(catalog.release_years))

    def title_tokens(self, item: str) -> list[str]:
        return title_tokens(self.titles.get(item, ""), self.release_years.get(item))


@dataclass(frozen=True)
class Vocabularies:
    """What the lookups know; anything else lands in hashed out-of-vocabulary buckets."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    devices: tuple[str, ...]
    title_tokens: tuple[str, ...] = ()

    @classmethod
    def build(cls, user_ids, item_ids, regions, devices, fields: ItemFields) -> "Vocabularies":
        def known(values) -> tuple[str, ...]:
            # Sorted so the same data always gives the same lookup indices (determinism).
            return tuple(sorted({str(v) for v in values} - {PAD}))

        items = set(item_ids)
        categories = (c for item in items for c in fields.categories.get(item, ()))
        token_items = Counter(token for item in items for token in fields.title_tokens(item))
        shared_tokens = (token for token, count in token_items.items() if count >= MIN_TITLE_TOKEN_ITEMS)
        return cls(known(user_ids), known(item_ids), known(categories), known(regions), known(devices), known(shared_tokens))


def item_sampling_probability(train_item_ids: np.ndarray) -> dict[str, float]:
    """Each item's share of training positives: the in-batch sampling probability logQ corrects for."""
    counts = Counter(train_item_ids.tolist())
    total = sum(counts.values())
    return {item: count / total for item, count in counts.items()}


def item_features(item_ids: Sequence[str], fields: ItemFields, max_categories: int) -> dict[str, np.ndarray]:
    """Item-tower inputs for the given items; items absent from the catalog get no categories,
    no title and the unknown year."""
    cats = pad_rows([fields.categories.get(item, ()) for item in item_ids], max_categories)
    titles = pad_rows([fields.title_tokens(item) for item in item_ids], MAX_TITLE_TOKENS)
    return {
        ITEM_ID: strings(np.asarray(item_ids, dtype=object)),
        CATEGORIES: strings(cats),
        RELEASE_YEAR: release_year_buckets([fields.release_years.get(item) for item in item_ids]),
        TITLE_TOKENS: strings(titles),
    }


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
