"""Export a fitted two-tower: user-tower SavedModel, item embeddings + ids, and a ScaNN index.

Serving embeds the request's raw user features with the SavedModel (strings in, no vocabulary
files to ship separately: the lookups are inside the graph) and searches the index built from
the exported item embeddings. ``ExportedTwoTower`` reloads the artifacts and scores exactly as
the in-memory model did, which is what the reload test checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from training.index import BruteForceIndex, ScannIndex, recall_against_exact
from training.two_tower.features import DEVICE, HISTORY, HOUR, QUERY_FEATURES, REGION, USER_ID
from training.two_tower.train import TwoTowerRecommender

USER_TOWER_DIR = "user_tower"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_IDS_FILE = "item_ids.npy"
INDEX_DIR = "index"
FEATURES_FILE = "two_tower.json"
SIGNATURE = "serving_default"
OUTPUT = "embedding"
RECALL_K = 10
RECALL_QUERIES = 500

# Any history length is accepted: the tower mean-pools, so serving may send fewer items.
SERVING_SIGNATURE = {
    USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID),
    HISTORY: tf.TensorSpec([None, None], tf.string, name=HISTORY),
    REGION: tf.TensorSpec([None], tf.string, name=REGION),
    DEVICE: tf.TensorSpec([None], tf.string, name=DEVICE),
    HOUR: tf.TensorSpec([None], tf.int64, name=HOUR),
}


def save_user_tower(model: TwoTowerRecommender, directory: Path) -> None:
    tower = model.model.user_tower

    @tf.function(input_signature=[SERVING_SIGNATURE])
    def serve(features):
        return {OUTPUT: tower(features)}

    module = tf.Module()
    module.tower = tower
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: serve.get_concrete_function()})


def export_two_tower(model: TwoTowerRecommender, directory: Path, items: Sequence[str], query_users: Sequence[str]) -> dict:
    """Write every artifact into ``directory``; returns metadata (feature spec, ScaNN recall@10 vs exact).

    ``query_users`` (e.g. a sample of training users) are the queries ScaNN is measured on.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_user_tower(model, directory / USER_TOWER_DIR)
    ids = np.asarray(items, dtype=str)
    embeddings = model.embed_items(list(items))
    np.save(directory / ITEM_EMBEDDINGS_FILE, embeddings)
    np.save(directory / ITEM_IDS_FILE, ids)
    index = ScannIndex(embeddings, ids.tolist())
    index.save(directory / INDEX_DIR)
    queries = model.embed_queries(model.user_features(list(query_users)[:RECALL_QUERIES]))
    recall = recall_against_exact(index, BruteForceIndex(embeddings, ids.tolist()), queries, k=RECALL_K)
    spec = {
        "signature": SIGNATURE,
        "inputs": list(QUERY_FEATURES),
        "output": OUTPUT,
        "history_len": model.params.history_len,
        "dim": int(embeddings.shape[1]),
        "items": len(ids),
    }
    (directory / FEATURES_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return {
        "two_tower": spec,
        "index": {"kind": index.kind, f"scann_recall@{RECALL_K}_vs_exact": round(recall, 4), "queries": len(queries)},
    }


class ExportedTwoTower:
    """The exported artifacts, reloaded: embeds raw user features and scores them against the items."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        self.spec = json.loads((directory / FEATURES_FILE).read_text())
        self.serve = tf.saved_model.load(str(directory / USER_TOWER_DIR)).signatures[SIGNATURE]
        self.item_ids = np.load(directory / ITEM_IDS_FILE).astype(object)
        self.item_embeddings = np.load(directory / ITEM_EMBEDDINGS_FILE)

    def embed_queries(self, features: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {name: tf.constant(features[name]) for name in QUERY_FEATURES}
        return self.serve(**tensors)[OUTPUT].numpy()

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[queries, items] dot-product scores, items in ``item_ids`` order."""
        return (self.embed_queries(features) @ self.item_embeddings.T).astype(np.float32)
