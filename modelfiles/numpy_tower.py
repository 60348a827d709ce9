"""The exported user tower evaluated in numpy, without TensorFlow.

Serving embeds one user per request, and a TensorFlow signature call costs most of a request's
CPU budget by itself. ``training.two_tower.export`` writes the tower as plain arrays
(``user_tower_weights.npz``: each lookup's vocabulary, then per member its tables, the history
encoder's weights under ``sequence.*`` and the MLP's); this module reads them and computes the same function.
``tests/test_two_tower.py`` proves it equal to the SavedModel within 1e-5. A file written before
the history encoders has no ``encoder`` entry: it mean-pools, as those versions did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import farmhash
import numpy as np

from modelfiles.query import (
    ATTENTION, DEVICE, GRU, HISTORY, HISTORY_AGE, HOUR, MEAN, PAD, RECENCY, REGION, USER_ID, age_buckets,
)

# The string lookups of the user tower, by the feature each one reads.
TOWER_LOOKUPS = {HISTORY: "items", USER_ID: "user", REGION: "region", DEVICE: "device"}
SEQUENCE_PREFIX = "sequence."
# How many members the file holds; each member's arrays are named under ``member_prefix(n)``.
MEMBERS = "members"


def member_prefix(member: int) -> str:
    return f"member{member}."


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SlotTables:
    """An order-aware encoder's tables of what a history slot adds: a row per position (0 = newest)
    and per age bucket. Called with a history's item vectors, their slots and their age buckets."""

    def __init__(self, w: dict[str, np.ndarray]):
        self.positions, self.ages = w["position"], w["age"]


class NumpyRecency(SlotTables):
    """``encoders.RecencyEncoder``: the item vectors weighted by a softmax of their slots' logits."""

    def __call__(self, vectors: np.ndarray, slots: np.ndarray, ages: np.ndarray) -> np.ndarray:
        logits = self.positions[slots] + self.ages[ages]
        weights = np.exp(logits - logits.max())
        return (weights / weights.sum()) @ vectors


class NumpyTimedTokens(SlotTables):
    """``encoders.TimedTokens``: each item vector plus its slot's position and age embeddings, which
    the subclass's ``encode`` reads."""

    def __call__(self, vectors: np.ndarray, slots: np.ndarray, ages: np.ndarray) -> np.ndarray:
        return self.encode(vectors + self.positions[slots] + self.ages[ages])


class NumpyAttention(NumpyTimedTokens):
    """``encoders.AttentionEncoder`` for one history: only the newest token's row is computed."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__(w)
        self.w = w
        self.scale = np.float32(w["query.kernel"].shape[1] ** -0.5)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        w = self.w
        newest = tokens[0]
        logits = (tokens @ w["key.kernel"]) @ (newest @ w["query.kernel"]) * self.scale
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        hidden = newest + (weights @ (tokens @ w["value.kernel"])) @ w["attended.kernel"] + w["attended.bias"]
        inner = np.maximum(hidden @ w["feed_forward_in.kernel"] + w["feed_forward_in.bias"], 0)
        return hidden + inner @ w["feed_forward_out.kernel"] + w["feed_forward_out.bias"]


class NumpyGru(NumpyTimedTokens):
    """``encoders.GruEncoder`` (Keras GRU, ``reset_after``; gates in Keras' order z, r, h)."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__(w)
        self.kernel, self.recurrent, self.bias = w["gru.kernel"], w["gru.recurrent"], w["gru.bias"]

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        units = self.recurrent.shape[0]
        inputs = tokens[::-1] @ self.kernel + self.bias[0]  # every step's input part at once
        state = np.zeros(units, dtype=np.float32)
        for step in inputs:
            inner = state @ self.recurrent + self.bias[1]
            update, reset = np.split(_sigmoid(step[: 2 * units] + inner[: 2 * units]), 2)
            candidate = np.tanh(step[2 * units :] + reset * inner[2 * units :])
            state = candidate + update * (state - candidate)
        return state


SEQUENCE_ENCODERS = {RECENCY: NumpyRecency, ATTENTION: NumpyAttention, GRU: NumpyGru}


class NumpyMember:
    """One member's user tower (``model.UserTower``): its embedding tables, history encoder and MLP,
    read from the arrays named under ``prefix``."""

    def __init__(self, arrays, prefix: str):
        self._tables = {feature: arrays[f"{prefix}{feature}.table"] for feature in TOWER_LOOKUPS}
        self._hours = arrays[f"{prefix}hour.table"]
        self._use_user_id = bool(arrays[f"{prefix}use_user_id"])
        self._mlp = [(arrays[f"{prefix}mlp.{n}.kernel"], arrays[f"{prefix}mlp.{n}.bias"]) for n in range(2)]
        self.encoder = str(arrays[f"{prefix}encoder"]) if f"{prefix}encoder" in arrays else MEAN
        weights = prefix + SEQUENCE_PREFIX
        sequence = {name[len(weights):]: arrays[name] for name in arrays.files if name.startswith(weights)}
        self._sequence = SEQUENCE_ENCODERS[self.encoder](sequence) if self.encoder != MEAN else None
        self.dim = self._mlp[-1][1].shape[0]

    def _history(self, rows: list[int], slots: np.ndarray, ages: np.ndarray) -> np.ndarray:
        table = self._tables[HISTORY]
        if not rows:
            return np.zeros(table.shape[1], table.dtype)
        vectors = table[rows]
        if self._sequence is None:
            return vectors.mean(axis=0)
        return self._sequence(vectors, slots, ages)

    def embed(self, rows: dict, slots: np.ndarray, ages: np.ndarray, hour: int) -> np.ndarray:
        """The member's unit query from the lookups' rows (``rows[HISTORY]``: the kept slots' items)."""
        parts = [
            self._history(rows[HISTORY], slots, ages),
            self._tables[REGION][rows[REGION]],
            self._tables[DEVICE][rows[DEVICE]],
            self._hours[hour],
        ]
        if self._use_user_id:
            parts.append(self._tables[USER_ID][rows[USER_ID]])
        (hidden_kernel, hidden_bias), (out_kernel, out_bias) = self._mlp
        hidden = np.maximum(np.concatenate(parts) @ hidden_kernel + hidden_bias, 0)
        query = hidden @ out_kernel + out_bias
        return query / np.sqrt(max(float(query @ query), 1e-12))


class NumpyUserTower:
    """The same lookups as the SavedModel (OOV ids hash into the same buckets, with TensorFlow's
    own FarmHash fingerprint), and per member the same history encoder, MLP and L2 norm; the
    members' queries side by side, as ``model.Members`` joins them.

    The members share one vocabulary (they are trained on the same data), so each value is
    looked up once. A file written before members existed names one member's arrays unprefixed.
    """

    def __init__(self, path: Path):
        with np.load(path) as arrays:
            self._oov = {feature: int(arrays[f"{feature}.oov"]) for feature in TOWER_LOOKUPS}
            self._index = {feature: {token: 1 + self._oov[feature] + n for n, token in enumerate(arrays[f"{feature}.tokens"].tolist())}
                           for feature in TOWER_LOOKUPS}
            prefixes = [member_prefix(n) for n in range(int(arrays[MEMBERS]))] if MEMBERS in arrays else [""]
            self._members = [NumpyMember(arrays, prefix) for prefix in prefixes]
        self.encoder = self._members[0].encoder
        self.dim = sum(member.dim for member in self._members)
        self._scale = np.float32(1 / np.sqrt(len(self._members)))

    def _row(self, feature: str, value: str) -> int:
        index = self._index[feature].get(value)
        if index is not None:
            return index
        if value == PAD:
            return 0
        oov = self._oov[feature]
        return 1 + (farmhash.fingerprint64(value) % oov if oov > 1 else 0)

    def embed_features(self, user_id: str, items: Sequence[str], ages: Sequence[int], region: str, device: str,
                       hour: int) -> np.ndarray:
        """One query's embedding (float32, unit length) from the tower's own inputs."""
        kept = [n for n, item in enumerate(items) if item != PAD]
        rows = {HISTORY: [self._row(HISTORY, items[n]) for n in kept], USER_ID: self._row(USER_ID, user_id),
                REGION: self._row(REGION, region), DEVICE: self._row(DEVICE, device)}
        slots = np.asarray(kept, dtype=np.int64)
        kept_ages = np.asarray(ages, dtype=np.int64)[slots]
        return np.concatenate([member.embed(rows, slots, kept_ages, hour) for member in self._members]) * self._scale

    def embed(self, user_id: str, history: Sequence[tuple[str, int]], region: str, device: str, hour: int,
              log_clock_ms: int) -> np.ndarray:
        """The query of ``history``'s ``(item, event time)`` pairs, newest first, aged at the log clock."""
        items = [item for item, _ in history]
        ages = age_buckets(log_clock_ms, [time for _, time in history]) if history else []
        return self.embed_features(user_id, items, ages, region, device, hour)

    def embed_queries(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """``ExportedTwoTower.embed_queries`` for the same feature arrays, one row at a time."""
        ages = features.get(HISTORY_AGE, np.zeros(features[HISTORY].shape, dtype=np.int64))
        rows = zip(features[USER_ID].tolist(), features[HISTORY].tolist(), ages.tolist(), features[REGION].tolist(),
                   features[DEVICE].tolist(), features[HOUR].tolist())
        return np.stack([self.embed_features(*row) for row in rows])
