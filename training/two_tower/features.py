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

from modelfiles.query import PAD, pad_rows, strings

# The item tower's inputs (the user tower's are ``modelfiles.query``'s).
ITEM_ID, CATEGORIES, ITEM_PROBABILITY = "item_id", "categories", "item_probability"


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
