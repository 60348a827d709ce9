"""A registered two-tower, loaded for serving: the user tower, the item embeddings, the ScaNN index
and, when the version carries one, its learned ranker."""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Sequence

import numpy as np

from kapparec.errors import KapparecError
from modelfiles.query import hour_of_day, query_features, timed_rows
from modelfiles.ranker import RANKER_FILE, LearnedRanker
from modelfiles.registry import ModelVersion, verify
from serving.catalog_arrays import CatalogArrays
from serving.filters import unblocked
from serving.ranker import load_ranker

log = logging.getLogger("kapparec.serving")


class ModelLoadError(KapparecError):
    """A model version whose artifacts cannot serve; the message is one line naming the version."""


class ServingModel:
    def __init__(self, version: str, exported, index, ranker: LearnedRanker | None = None):
        self.version = version
        self.ranker = ranker  # None: the funnel ranks with the documented blend
        self.history_length = int(exported.spec["history_len"])
        self._exported = exported
        self._index = index
        self._row_of = {item: row for row, item in enumerate(exported.item_ids.tolist())}
        self._named = index.ids != ""  # an index position without an item id is never a candidate
        self._rows_in: tuple[CatalogArrays, np.ndarray] | None = None
        # The numpy user tower (proven equal to the SavedModel) when the version has its weights:
        # a TensorFlow call per request costs more CPU than the rest of the funnel.
        self._tower = exported.numpy_tower
        if self._tower is None:
            log.warning("event=model_tower version=%s backend=tensorflow reason='exported without "
                        "user_tower_weights.npz (before the numpy tower): embeds through TensorFlow'", version)

    @classmethod
    def load(cls, version: ModelVersion) -> "ServingModel":
        import scann  # noqa: F401 - ScaNN's ops must be registered before any SavedModel loads

        from modelfiles.index import load_index
        from modelfiles.two_tower import INDEX_DIR, ExportedTwoTower

        try:
            verify(version)  # a truncated or overwritten file may still load, and serve garbage
            exported = ExportedTwoTower(version.path)
            index = load_index(version.path / INDEX_DIR)
            ranker_file = version.path / RANKER_FILE
            model = cls(version.id, exported, index, load_ranker(ranker_file) if ranker_file.is_file() else None)
            model.embed_user("", [], "", "", 0, log_clock_ms=0)  # a request that cannot be answered fails here, not live
        except Exception as exc:  # noqa: BLE001 - any broken artifact refuses the version
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"model {version.id} refused: {type(exc).__name__}: {first}") from None
        return model

    def with_ranker(self, ranker: LearnedRanker | None) -> "ServingModel":
        """The same model ranking with ``ranker`` (offline evaluation compares rankers over one model)."""
        other = copy.copy(self)
        other.ranker = ranker
        return other

    def embed_user(self, user_id: str, history: Sequence[tuple[str, int]], region: str, device: str, hour: int,
                   log_clock_ms: int) -> np.ndarray:
        """The query of ``history``'s ``(item, event time)`` pairs, newest first, aged at ``log_clock_ms``
        (the snapshot's log clock, as training ages each example at its own log time)."""
        timed = history[: self.history_length]
        if self._tower is not None:
            return self._tower.embed(user_id, timed, region, device, hour, log_clock_ms)
        items, ages = timed_rows([timed], [log_clock_ms], max(1, self.history_length))
        features = query_features(np.array([user_id], dtype=object), items, ages, [region], [device], [hour])
        return self._exported.embed_queries(features)[0]

    def nearest(self, embedding: np.ndarray, k: int, catalog: CatalogArrays, skip: Sequence[Collection[str]] = ()
                ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The ``k`` items nearest ``embedding`` that no collection of ``skip`` holds, best first: their
        ids, catalog rows and scores (float64).

        The index is asked for as many more as ``skip`` could remove. Otherwise a user who has seen
        most of their nearest items (the model ranks what they watched highest) would bring the page
        a pool its filters empty, and the page would be filled with popular items instead."""
        extra = sum(map(len, skip))
        positions, scores = self._index.search_positions(embedding[np.newaxis, :].astype(np.float32), k + extra)
        positions, scores = positions[0], scores[0]
        named = self._named[positions]
        positions, scores = positions[named], scores[named]
        ids = self._index.ids[positions].tolist()
        if extra:
            kept = np.flatnonzero(unblocked(ids, skip))[:k]
            positions, scores, ids = positions[kept], scores[kept], [ids[n] for n in kept.tolist()]
        return ids, self._catalog_rows(catalog)[positions], scores.astype(np.float64)

    def _catalog_rows(self, catalog: CatalogArrays) -> np.ndarray:
        """Each index position's catalog row, for the catalog requests see now (kept until it changes)."""
        found = self._rows_in
        if found is None or found[0] is not catalog:
            found = self._rows_in = (catalog, catalog.rows(self._index.ids.tolist()))
        return found[1]

    def closest(self, item_ids: list[str], among: list[str]) -> list[str]:
        """For each of ``item_ids``, the item of ``among`` whose embedding is nearest ("" where none is known)."""
        known = [item for item in among if item in self._row_of]
        targets = [n for n, item in enumerate(item_ids) if item in self._row_of]
        found = [""] * len(item_ids)
        if not known or not targets:
            return found
        vectors = self._exported.item_embeddings
        rows = vectors[[self._row_of[item_ids[n]] for n in targets]]
        best = np.argmax(rows @ vectors[[self._row_of[item] for item in known]].T, axis=1)
        for n, column in zip(targets, best.tolist()):
            found[n] = known[column]
        return found


def hour_of(now_ms: int) -> int:
    return int(hour_of_day(np.array([now_ms]))[0])
