"""Export a fitted two-tower: user-tower SavedModel, item embeddings + ids, and a ScaNN index.

The SavedModel embeds raw user features (strings in: the lookups are inside the graph). The
same user tower is also written as plain arrays (``user_tower_weights.npz``) that
``modelfiles.numpy_tower`` evaluates without TensorFlow. The files are named by
``modelfiles.two_tower``, whose ``ExportedTwoTower`` reloads them and scores exactly as the
in-memory model did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from modelfiles.index import BruteForceIndex, ScannIndex, calibrated, recall_against_exact
from modelfiles.numpy_tower import MEMBERS, SEQUENCE_PREFIX, TOWER_LOOKUPS, member_prefix
from modelfiles.query import DEVICE, HISTORY, HISTORY_AGE, HOUR, QUERY_FEATURES, REGION, USER_ID
from modelfiles.two_tower import (
    FEATURES_FILE, INDEX_DIR, ITEM_EMBEDDINGS_FILE, ITEM_IDS_FILE, OUTPUT, SIGNATURE, TOWER_WEIGHTS_FILE, USER_TOWER_DIR,
)
from training.two_tower.train import TwoTowerRecommender

RECALL_K = 10
RECALL_QUERIES = 500

# Any history length up to the trained one is accepted: serving may send fewer items.
SERVING_SIGNATURE = {
    USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID),
    HISTORY: tf.TensorSpec([None, None], tf.string, name=HISTORY),
    HISTORY_AGE: tf.TensorSpec([None, None], tf.int64, name=HISTORY_AGE),
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


def save_tower_weights(model: TwoTowerRecommender, path: Path) -> None:
    """The user tower as arrays: per lookup its tokens and OOV bucket count (one vocabulary, which
    every member shares); per member, under its prefix, each lookup's embedding table, the hour
    table, the history encoder's name and weights, the MLP's kernels and biases and whether the
    user id is an input."""
    towers = model.model.user_tower.towers
    arrays = {MEMBERS: np.array(len(towers))}
    for feature, name in TOWER_LOOKUPS.items():
        lookup = getattr(towers[0], name).lookup
        # The lookup's layout: index 0 is the mask (padding), then the OOV buckets, then the tokens.
        arrays[f"{feature}.tokens"] = np.asarray(lookup.get_vocabulary()[1 + lookup.num_oov_indices:], dtype=str)
        arrays[f"{feature}.oov"] = np.array(lookup.num_oov_indices)
    for member, tower in enumerate(towers):
        arrays |= {member_prefix(member) + name: value for name, value in _member_arrays(tower).items()}
    np.savez(path, **arrays)


def _member_arrays(tower) -> dict[str, np.ndarray]:
    arrays = {"use_user_id": np.array(tower.use_user_id), "hour.table": tower.hour.embeddings.numpy(),
              "encoder": np.array(tower.encoder)}
    if tower.sequence is not None:
        arrays |= {SEQUENCE_PREFIX + name: value for name, value in tower.sequence.arrays().items()}
    for feature, name in TOWER_LOOKUPS.items():
        arrays[f"{feature}.table"] = getattr(tower, name).embedding.embeddings.numpy()
    for n, dense in enumerate(tower.mlp.layers):
        arrays[f"mlp.{n}.kernel"], arrays[f"mlp.{n}.bias"] = (w.numpy() for w in dense.weights)
    return arrays


def export_two_tower(model: TwoTowerRecommender, directory: Path, items: Sequence[str], query_users: Sequence[str]) -> dict:
    """Write every artifact into ``directory``; returns metadata (feature spec, ScaNN recall@10 vs exact).

    ``query_users`` (e.g. a sample of training users) are the queries the index is calibrated on
    (every other one) and measured on (the rest), so the recall reported is not the one chosen on.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_user_tower(model, directory / USER_TOWER_DIR)
    save_tower_weights(model, directory / TOWER_WEIGHTS_FILE)
    ids = np.asarray(items, dtype=str)
    embeddings = model.embed_items(list(items))
    np.save(directory / ITEM_EMBEDDINGS_FILE, embeddings)
    np.save(directory / ITEM_IDS_FILE, ids)
    queries = model.embed_queries(model.user_features(list(query_users)[:RECALL_QUERIES]))
    exact = BruteForceIndex(embeddings, ids.tolist())
    index, calibration = calibrated(ScannIndex(embeddings, ids.tolist()), exact, queries[::2], k=RECALL_K)
    index.save(directory / INDEX_DIR)
    measured = queries[1::2] if len(queries) > 1 else queries
    recall = recall_against_exact(index, exact, measured, k=RECALL_K)
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
        "index": {"kind": index.kind, f"scann_recall@{RECALL_K}_vs_exact": round(recall, 4), "queries": len(measured),
                  "leaves_searched": index.params.leaves_to_search, "calibration": calibration},
    }
