"""An exported two-tower on disk: its files' names, and the loader serving and evaluation read it with.

``training.two_tower.export`` writes these files into a registry version:

- ``user_tower/``: the user tower as a SavedModel, its signature taking raw strings (the lookups
  are inside the graph), so it accepts exactly what serving has at request time;
- ``user_tower_weights.npz``: the same tower as arrays, for ``modelfiles.numpy_tower``;
- ``item_embeddings.npy`` and ``item_ids.npy``: the item tower's output for the catalog;
- ``index/``: the retrieval index over those embeddings (``modelfiles.index``);
- ``two_tower.json``: the signature's inputs, the history length and the embedding width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import modelfiles  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from modelfiles.numpy_tower import NumpyUserTower

USER_TOWER_DIR = "user_tower"
TOWER_WEIGHTS_FILE = "user_tower_weights.npz"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_IDS_FILE = "item_ids.npy"
INDEX_DIR = "index"
FEATURES_FILE = "two_tower.json"
SIGNATURE = "serving_default"
OUTPUT = "embedding"


class ExportedTwoTower:
    """The exported artifacts, reloaded: embeds raw user features and scores them against the items."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        self.spec = json.loads((directory / FEATURES_FILE).read_text())
        self.serve = tf.saved_model.load(str(directory / USER_TOWER_DIR)).signatures[SIGNATURE]
        # None for a version exported before the weights were: it embeds through TensorFlow alone.
        weights = directory / TOWER_WEIGHTS_FILE
        self.numpy_tower = NumpyUserTower(weights) if weights.exists() else None
        self.item_ids = np.load(directory / ITEM_IDS_FILE).astype(object)
        self.item_embeddings = np.load(directory / ITEM_EMBEDDINGS_FILE)

    def embed_queries(self, features: dict[str, np.ndarray]) -> np.ndarray:
        # A version exported before the history's ages has fewer inputs: each gets what it names.
        tensors = {name: tf.constant(features[name]) for name in self.spec["inputs"]}
        return self.serve(**tensors)[OUTPUT].numpy()

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[queries, items] dot-product scores, items in ``item_ids`` order."""
        return (self.embed_queries(features) @ self.item_embeddings.T).astype(np.float32)
