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

from modelfiles.query import DEVICE, HOUR, PAD, REGION, USER_ID, hour_of_day, pad_rows, strings

# The item tower's inputs (the user tower's are ``modelfiles.query``'s).
ITEM_ID, CATEGORIES, ITEM_PROBABILITY = "item_id", "categories", "item_probability"
RELEASE_YEAR, TITLE_TOKENS = "release_year", "title_tokens"

# Release years in five-year buckets from 1920 (earlier years share the first, later than 2030
# the last); bucket 0 is "unknown", an item whose catalog record gives no year.
UNKNOWN_YEAR, FIRST_BUCKETED_YEAR, YEARS_PER_BUCKET, DATED_YEAR_BUCKETS = 0, 1920, 5, 23
YEAR_BUCKETS = 1 + DATED_YEAR_BUCKETS
MAX_TITLE_TOKENS = 8
# A title token is a vocabulary entry only if this many training items' titles hold it: a word
# of one title says no more than that item's id, and the rest share the lookup's OOV bucket.
MIN_TITLE_TOKEN_ITEMS = 2
_WORD = re.compile(r"[^\W_]+")


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


def positive_features(train, fields: ItemFields, max_categories: int) -> dict[str, np.ndarray]:
    """Each positive of ``train`` (``training.data.Interactions``) as a training query without its history:
    the user, the event's own context and hour, the target item and its in-batch sampling probability."""
    probability = item_sampling_probability(train.item_ids)
    return {
        USER_ID: strings(train.user_ids),
        REGION: strings(train.regions),
        DEVICE: strings(train.devices),
        HOUR: hour_of_day(train.event_times),
        ITEM_PROBABILITY: np.array([probability[i] for i in train.item_ids.tolist()], dtype=np.float32),
    } | item_features(train.item_ids.tolist(), fields, max_categories)
