"""Candidate generators: each proposes items from one source, ranked within that source, as a ``Pool``."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from featurestore.reader import UserFeatures
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.request import Pool

if TYPE_CHECKING:
    from serving.snapshot import Snapshot

Ranked = list[tuple[str, float]]


def listed(source: str, items: Ranked, n: int, catalog: CatalogArrays) -> Pool:
    ids = [item for item, _ in items[:n]]
    return Pool.of(source, ids, catalog.rows(ids))


def shared_lists(snapshot: Snapshot, config: FunnelConfig, wanted: frozenset[str], region: str,
                 catalog: CatalogArrays) -> tuple[Pool, Counter]:
    """The shared lists' candidates for ``region`` (the ``wanted`` ones of trending, popular and new)
    and their counts per source: the same for every user of the region (about half a pool), so
    built once per snapshot."""
    def build() -> tuple[FunnelConfig, Pool, Counter]:
        lists = {"trending": snapshot.trending_in(region), "popular": snapshot.popular_in(region),
                 "new_item": snapshot.new_items}
        pool = Pool.joined([listed(source, ranked, config.list_candidates, catalog)
                            for source, ranked in lists.items() if source in wanted])
        return config, pool, pool.counts()

    # Keyed by the config's identity, and the entry holds the config, so no other config can
    # take that identity while the entry lives: every knob of the lists is covered.
    _, pool, counts = snapshot.derived(("lists", region, wanted, id(config)), build)
    return pool, counts


def two_tower(ids: list[str], rows: np.ndarray, scores: np.ndarray) -> Pool:
    """The model's nearest items (``ServingModel.nearest``) for the user's embedding, best first."""
    return Pool.of("two_tower", ids, rows, scores=scores)


def co_occurrence(neighbours: list[Ranked], recent: list[str], catalog: CatalogArrays) -> Pool:
    """The neighbours of each recent item (``neighbours[i]`` those of ``recent[i]``), interleaved so
    that every recent item gets its turn: each list's first, then each list's second, and so on."""
    lengths = np.fromiter(map(len, neighbours), dtype=np.int64, count=len(neighbours))
    ids = [item for items in neighbours for item, _ in items]
    of_list = np.repeat(np.arange(len(neighbours)), lengths)
    place = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    order = np.lexsort((of_list, place)).tolist()
    ids = [ids[n] for n in order]
    because = [recent[n] for n in of_list[order].tolist()]
    return Pool.of("co_occurrence", ids, catalog.rows(ids), because)


def continue_watching(user: UserFeatures, catalog: CatalogArrays) -> Pool:
    ids = [item for item, _ in user.continue_watching]
    return Pool.of("continue_watching", ids, catalog.rows(ids))
