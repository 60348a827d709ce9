"""A registered two-tower, loaded for serving: the user tower, the item embeddings and the ScaNN index."""

from __future__ import annotations

import numpy as np

from kapparec.errors import KapparecError
from training.registry import ModelVersion
from training.two_tower.features import hour_of_day, pad_rows, query_features


class ModelLoadError(KapparecError):
    """A model version whose artifacts cannot serve; the message is one line naming the version."""


class ServingModel:
    def __init__(self, version: str, exported, index):
        self.version = version
        self.history_length = int(exported.spec["history_len"])
        self._exported = exported
        self._index = index
        self._row_of = {item: row for row, item in enumerate(exported.item_ids.tolist())}

    @classmethod
    def load(cls, version: ModelVersion) -> "ServingModel":
        import scann  # noqa: F401 - ScaNN's ops must be registered before any SavedModel loads

        from training.index import load_index
        from training.two_tower.export import INDEX_DIR, ExportedTwoTower

        try:
            exported = ExportedTwoTower(version.path)
            index = load_index(version.path / INDEX_DIR)
            model = cls(version.id, exported, index)
            model.embed_user("", [], "", "", 0)  # a request that cannot be answered fails here, not live
        except Exception as exc:  # noqa: BLE001 - any broken artifact refuses the version
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"model {version.id} refused: {type(exc).__name__}: {first}") from None
        return model

    def embed_user(self, user_id: str, history: list[str], region: str, device: str, hour: int) -> np.ndarray:
        features = query_features(
            np.array([user_id], dtype=object), pad_rows([history], max(1, self.history_length)),
            [region], [device], [hour],
        )
        return self._exported.embed_queries(features)[0]

    def search(self, embedding: np.ndarray, k: int) -> list[tuple[str, float]]:
        ids, scores = self._index.search(embedding[np.newaxis, :].astype(np.float32), k)
        return [(str(item), float(score)) for item, score in zip(ids[0], scores[0]) if item != ""]

    def closest(self, item_id: str, among: list[str]) -> str:
        """The item of ``among`` whose embedding is nearest ``item_id``'s ("" if none is known)."""
        rows = [self._row_of[i] for i in among if i in self._row_of]
        if item_id not in self._row_of or not rows:
            return ""
        vectors = self._exported.item_embeddings
        best = int(np.argmax(vectors[rows] @ vectors[self._row_of[item_id]]))
        return [i for i in among if i in self._row_of][best]


def hour_of(now_ms: int) -> int:
    return int(hour_of_day(np.array([now_ms]))[0])
