"""The user tower's history encoders: how an ordered, timed history becomes one vector.

- ``mean``: the average of the history's item vectors, blind to order and time;
- ``recency``: a weighted average of the item vectors, each slot's weight a softmax of a learned
  logit per position (0 = newest) plus one per age bucket: what a user did last can count for more
  than what they did months ago, at the cost of a mean-pool;
- ``attention``: one self-attention block (SASRec's, read at the newest position): each history
  token is its item vector plus an embedding of its position (0 = newest) and of its age bucket
  (time since the event at the query's log time), and the newest token attends over them all;
- ``gru``: a GRU run over the same tokens from oldest to newest, its last state.

Every history here is a point-in-time history (``training.tower_inputs``), so a position's
tokens are exactly what serving reads at that moment. Each encoder names its weights in
``arrays()``; ``modelfiles.numpy_tower`` evaluates the same names without TensorFlow.
"""

from __future__ import annotations

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf

from modelfiles.query import AGE_BUCKETS, ATTENTION, ENCODERS, GRU, RECENCY

# A masked attention logit: exp() of it is 0 in float32, so padding gets no weight.
MASKED = -1e9


class TimedTokens(tf.keras.layers.Layer):
    """Item vector + position embedding + age-bucket embedding per history slot, zero on padding."""

    def __init__(self, history_len: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.position = tf.keras.layers.Embedding(history_len, dim)
        self.age = tf.keras.layers.Embedding(AGE_BUCKETS, dim)

    def call(self, item_vectors: tf.Tensor, ages: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        positions = self.position(tf.range(tf.shape(item_vectors)[1]))[tf.newaxis]
        return (item_vectors + positions + self.age(ages)) * mask[..., tf.newaxis]

    def arrays(self) -> dict:
        return {"position": self.position.embeddings.numpy(), "age": self.age.embeddings.numpy()}


class AttentionEncoder(tf.keras.layers.Layer):
    """One single-head self-attention block with a feed-forward layer and residuals, read at the
    newest token: only that token's output is the query, so only its row is computed."""

    def __init__(self, history_len: int, dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.tokens = TimedTokens(history_len, dim)
        self.query = tf.keras.layers.Dense(dim, use_bias=False)
        self.key = tf.keras.layers.Dense(dim, use_bias=False)
        self.value = tf.keras.layers.Dense(dim, use_bias=False)
        self.attended = tf.keras.layers.Dense(dim)
        self.feed_forward_in = tf.keras.layers.Dense(2 * dim, activation="relu")
        self.feed_forward_out = tf.keras.layers.Dense(dim)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.scale = float(dim) ** -0.5

    def call(self, item_vectors, ages, mask, training=None):
        tokens = self.tokens(item_vectors, ages, mask)
        newest = tokens[:, 0]
        # Query, key, value in this order: the order layers are first called in fixes their seeded initial weights.
        query = self.query(newest)
        return self._read(newest, query, self.key(tokens), self.value(tokens), mask, training)

    def over_sequence(self, sequence_vectors, slots, ages, mask, training=None):
        """``call`` for every query of a chunk (``training.two_tower.positions``) at once: ``[B, C, d]``.

        ``slots`` ``[B, C, P]`` name each query's history items in ``sequence_vectors`` ``[B, K, d]``,
        newest first. A token is item + position + age, and the query, key and value maps have no
        bias, so each projected token is the sum of its parts' projections: the items are projected
        once per chunk rather than once per query that shows them, and the (query, key) pair's
        age is a row of the projected age table.
        """
        positions = self.tokens.position(tf.range(tf.shape(slots)[-1]))
        age_table = self.tokens.age(tf.range(AGE_BUCKETS))

        def projected(dense: tf.keras.layers.Dense) -> tf.Tensor:
            items = tf.gather(dense(sequence_vectors), slots, batch_dims=1)
            return (items + dense(positions) + tf.gather(dense(age_table), ages)) * mask[..., tf.newaxis]

        newest = tf.gather(sequence_vectors, slots[..., 0], batch_dims=1) + positions[0] + tf.gather(age_table, ages[..., 0])
        newest *= mask[..., :1]
        keys, values = projected(self.key), projected(self.value)
        return self._read(newest, self.query(newest), keys, values, mask, training)

    def _read(self, newest, query, keys, values, mask, training):
        """The block's output at the newest token, from its projected query and its history's keys and values."""
        batch = "bc"[: len(newest.shape) - 1]  # one batch axis for single queries, two for chunks
        logits = tf.einsum(f"{batch}d,{batch}ld->{batch}l", query, keys) * self.scale
        weights = tf.nn.softmax(logits + (1.0 - mask) * MASKED, axis=-1)
        hidden = newest + self.dropout(self.attended(tf.einsum(f"{batch}l,{batch}ld->{batch}d", weights, values)),
                                       training=training)
        hidden = hidden + self.dropout(self.feed_forward_out(self.feed_forward_in(hidden)), training=training)
        # No history: nothing to attend to, and the query rests on the user and context alone.
        return hidden * tf.reduce_max(mask, axis=-1, keepdims=True)

    def arrays(self) -> dict:
        dense = {name: getattr(self, name) for name in
                 ("query", "key", "value", "attended", "feed_forward_in", "feed_forward_out")}
        arrays = {f"{name}.kernel": layer.kernel.numpy() for name, layer in dense.items()}
        arrays |= {f"{name}.bias": layer.bias.numpy() for name, layer in dense.items() if layer.use_bias}
        return self.tokens.arrays() | arrays


class RecencyEncoder(tf.keras.layers.Layer):
    """A weighted mean of the history's item vectors, weights ``softmax(position logit + age logit)``
    over the slots that hold an item. The logits start at zero, where it is the mean-pool, so any
    recency it learns is the data's, not a prior's. Each logit is its weight times ``LOGIT_SCALE``,
    because Adam moves each weight by about the learning rate per step whatever its gradient: the
    factor lets a logit move that many times faster than an embedding coordinate, so a slot's
    weight can change by a large factor within the few epochs that validation trains for."""

    LOGIT_SCALE = 20.0

    def __init__(self, history_len: int, dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.position = tf.keras.layers.Embedding(history_len, 1, embeddings_initializer="zeros")
        self.age = tf.keras.layers.Embedding(AGE_BUCKETS, 1, embeddings_initializer="zeros")

    def call(self, item_vectors, ages, mask, training=None):
        positions = self.position(tf.range(tf.shape(item_vectors)[-2]))[..., 0]
        logits = (positions + self.age(ages)[..., 0]) * self.LOGIT_SCALE + (1.0 - mask) * MASKED
        weights = tf.nn.softmax(logits, axis=-1)
        # No history: nothing to weigh, and the query rests on the user and context alone.
        pooled = tf.einsum("...l,...ld->...d", weights, item_vectors)
        return pooled * tf.reduce_max(mask, axis=-1, keepdims=True)

    def arrays(self) -> dict:
        return {name: layer.embeddings.numpy()[:, 0] * self.LOGIT_SCALE
                for name, layer in (("position", self.position), ("age", self.age))}


class GruEncoder(tf.keras.layers.Layer):
    """A GRU over the timed tokens, oldest to newest, skipping padding; its last state."""

    def __init__(self, history_len: int, dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.tokens = TimedTokens(history_len, dim)
        self.gru = tf.keras.layers.GRU(dim)
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, item_vectors, ages, mask, training=None):
        oldest_first = tf.reverse(self.tokens(item_vectors, ages, mask), axis=[1])
        state = self.gru(oldest_first, mask=tf.reverse(mask > 0, axis=[1]))
        return self.dropout(state, training=training)

    def arrays(self) -> dict:
        kernel, recurrent, bias = (w.numpy() for w in self.gru.weights)
        return self.tokens.arrays() | {"gru.kernel": kernel, "gru.recurrent": recurrent, "gru.bias": bias}


def sequence_encoder(encoder: str, history_len: int, dim: int, dropout: float) -> tf.keras.layers.Layer | None:
    """The layer for ``encoder``; None for ``mean``, which pools the item vectors directly."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown history encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
    layers = {ATTENTION: AttentionEncoder, GRU: GruEncoder, RECENCY: RecencyEncoder}
    return layers[encoder](history_len, dim, dropout) if encoder in layers else None
