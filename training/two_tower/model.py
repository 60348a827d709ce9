"""The towers and the retrieval task (TFRS), as Keras models over raw string features.

The item-id embedding table is shared: the item tower embeds the candidate with it and the
user tower encodes the user's recent history with it (``encoders``), so "watched X" and "is X" live in one
space and a history of rarely-seen items still moves the query. Ids never seen in training
hash into out-of-vocabulary buckets, so new users and items still get an embedding (a new
item's comes mostly from its categories).
"""

from __future__ import annotations

from dataclasses import dataclass

import training  # noqa: F401 - selects the legacy Keras before TensorFlow loads
import tensorflow as tf
import tensorflow_recommenders as tfrs

from modelfiles.query import DEVICE, HISTORY, HISTORY_AGE, HOUR, HOURS_PER_DAY, MEAN, PAD, REGION, USER_ID
from training.two_tower.features import (
    CATEGORIES,
    ITEM_ID,
    ITEM_PROBABILITY,
    RELEASE_YEAR,
    TITLE_TOKENS,
    YEAR_BUCKETS,
    Vocabularies,
)
from training.two_tower.encoders import AttentionEncoder, sequence_encoder
from training.two_tower.positions import CHUNK_FEATURES, NO_SLOT, QUERY_MASK, SEQUENCE, SLOTS


UNSEEN = "\x00unseen"


@dataclass(frozen=True)
class TowerShape:
    embedding_dim: int = 64  # width of the id/category embeddings
    output_dim: int = 64  # the retrieval space both towers project into
    hidden_dim: int = 128
    oov_buckets: int = 8
    context_dim: int = 8  # region, device, hour: few values, little to say
    use_user_id: bool = True
    encoder: str = MEAN  # how the history becomes one vector (training.two_tower.encoders)
    dropout: float = 0.0  # inside the attention and GRU encoders, while training
    # The item tower also reads the release year and the title's words (a search dimension:
    # validation turns them off where they do not help).
    catalog_fields: bool = True


class StringEmbedding(tf.keras.layers.Layer):
    """String -> vector with OOV buckets; ``pooled`` averages over the last axis skipping padding."""

    def __init__(self, vocabulary, dim: int, oov_buckets: int, **kwargs):
        super().__init__(**kwargs)
        # Keras refuses an empty vocabulary (e.g. a log without device context): one placeholder
        # token that no real value equals keeps every value in the OOV buckets instead.
        known = list(vocabulary) or [UNSEEN]
        self.lookup = tf.keras.layers.StringLookup(vocabulary=known, mask_token=PAD, num_oov_indices=oov_buckets)
        self.embedding = tf.keras.layers.Embedding(self.lookup.vocabulary_size(), dim)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        return self.embedding(self.lookup(values))

    def pooled(self, values: tf.Tensor) -> tf.Tensor:
        return masked_mean(self.embedding(self.lookup(values)), tf.cast(tf.not_equal(values, PAD), tf.float32))


def masked_mean(vectors: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The mean of ``vectors`` ``[..., L, d]`` over the slots where ``mask`` ``[..., L]`` is 1."""
    mask = mask[..., tf.newaxis]
    # An all-padding row (no history yet) pools to zeros rather than NaN.
    return tf.reduce_sum(vectors * mask, axis=-2) / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)


def projection(shape: TowerShape, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential(
        [tf.keras.layers.Dense(shape.hidden_dim, activation="relu"), tf.keras.layers.Dense(shape.output_dim)], name=name
    )


class UserTower(tf.keras.Model):
    """User id + encoded recent history + context (region, device, hour) -> L2-normalised query."""

    def __init__(self, vocab: Vocabularies, items: StringEmbedding, shape: TowerShape, history_len: int):
        super().__init__()
        self.use_user_id = shape.use_user_id
        self.encoder = shape.encoder
        self.items = items
        self.sequence = sequence_encoder(shape.encoder, history_len, shape.embedding_dim, shape.dropout)
        self.user = StringEmbedding(vocab.users, shape.embedding_dim, shape.oov_buckets)
        self.region = StringEmbedding(vocab.regions, shape.context_dim, 1)
        self.device = StringEmbedding(vocab.devices, shape.context_dim, 1)
        self.hour = tf.keras.layers.Embedding(HOURS_PER_DAY, shape.context_dim)
        self.mlp = projection(shape, "user_mlp")

    def call(self, features: dict, training=None) -> tf.Tensor:
        return self.embed(self._history(features, training), features)

    def embed(self, history: tf.Tensor, features: dict) -> tf.Tensor:
        """The query from an encoded history and the query's user and context features."""
        parts = [
            history,
            self.region(features[REGION]),
            self.device(features[DEVICE]),
            self.hour(features[HOUR]),
        ]
        if self.use_user_id:
            parts.append(self.user(features[USER_ID]))
        return tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=-1)), axis=-1)

    def _history(self, features: dict, training) -> tf.Tensor:
        history = features[HISTORY]
        if self.sequence is None:
            return self.items.pooled(history)
        mask = tf.cast(tf.not_equal(history, PAD), tf.float32)
        return self.sequence(self.items(history), features[HISTORY_AGE], mask, training=training)

    def histories_at_positions(self, chunks: dict, training) -> tf.Tensor:
        """The encoded history of every query of a batch of chunks (``training.two_tower.positions``): ``[B, C, d]``.

        The chunk's items are looked up once; the attention encoder also projects them once
        (``over_sequence``), the other encoders read each query's gathered items as ``call`` does.
        """
        slots = chunks[SLOTS]
        mask = tf.cast(tf.not_equal(slots, NO_SLOT), tf.float32)
        slots = tf.maximum(slots, 0)  # padding reads item 0, masked out
        sequence = self.items(chunks[SEQUENCE])
        ages = chunks[HISTORY_AGE]
        if isinstance(self.sequence, AttentionEncoder):
            return self.sequence.over_sequence(sequence, slots, ages, mask, training=training)
        vectors = tf.gather(sequence, slots, batch_dims=1)
        if self.sequence is None:
            return masked_mean(vectors, mask)
        shape = tf.shape(vectors)
        flat = self.sequence(tf.reshape(vectors, [-1, shape[2], shape[3]]), tf.reshape(ages, [-1, shape[2]]),
                             tf.reshape(mask, [-1, shape[2]]), training=training)
        return tf.reshape(flat, [shape[0], shape[1], flat.shape[-1]])


class ItemTower(tf.keras.Model):
    """Item id + pooled categories (+ release-year bucket + pooled title words) -> L2-normalised candidate.

    Serving never runs it: export embeds every item once into the ScaNN index, so what the item
    tower reads costs nothing per request.
    """

    def __init__(self, vocab: Vocabularies, items: StringEmbedding, shape: TowerShape):
        super().__init__()
        self.items = items
        self.categories = StringEmbedding(vocab.categories, shape.embedding_dim, 1)
        self.catalog_fields = shape.catalog_fields
        if shape.catalog_fields:
            self.year = tf.keras.layers.Embedding(YEAR_BUCKETS, shape.context_dim)
            self.title = StringEmbedding(vocab.title_tokens, shape.embedding_dim, 1)
        self.mlp = projection(shape, "item_mlp")

    def call(self, features: dict) -> tf.Tensor:
        parts = [self.items(features[ITEM_ID]), self.categories.pooled(features[CATEGORIES])]
        if self.catalog_fields:
            parts += [self.year(features[RELEASE_YEAR]), self.title.pooled(features[TITLE_TOKENS])]
        return tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=-1)), axis=-1)


class Members(tf.keras.Model):
    """The same tower of every member side by side: their unit vectors concatenated and scaled by
    1/sqrt(members), so the result is a unit vector again and one dot product between a user's and
    an item's is the members' mean cosine. One query and one index then serve a seed ensemble."""

    def __init__(self, towers: list[tf.keras.Model]):
        super().__init__()
        self.towers = towers

    def call(self, features: dict) -> tf.Tensor:
        # Keras hands each tower the ``training`` flag this call was given.
        vectors = [tower(features) for tower in self.towers]
        return tf.concat(vectors, axis=-1) / tf.sqrt(float(len(vectors)))


def member_key(member: int) -> str:
    """Where a training batch holds the examples of ``member``: each member draws its own shuffle."""
    return f"member{member}"


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval with logQ popularity correction and accidental-hit removal.

    With several ``members``, each is a two-tower of its own (its own item table too) with its own
    initial weights and its own shuffle of the examples (``member_key``), trained on its own loss:
    the loss is their sum and no weight is shared, so each member learns as it would alone, in one
    fit. On a small log a single model's ranking owes much to its random start; the members' mean
    cosine (``Members``) averages that part out.
    """

    def __init__(self, vocab: Vocabularies, shape: TowerShape, temperature: float, history_len: int, members: int = 1):
        super().__init__()
        pairs = [self._member(vocab, shape, history_len) for _ in range(members)]
        self.user_tower = Members([user for user, _ in pairs])
        self.item_tower = Members([item for _, item in pairs])
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

    @staticmethod
    def _member(vocab: Vocabularies, shape: TowerShape, history_len: int) -> tuple[UserTower, ItemTower]:
        items = StringEmbedding(vocab.items, shape.embedding_dim, shape.oov_buckets)
        return UserTower(vocab, items, shape, history_len), ItemTower(vocab, items, shape)

    def compute_loss(self, batches: dict, training: bool = False) -> tf.Tensor:
        """The members' summed losses, each on its own batch (``batches``: the batch of each member, by ``member_key``)."""
        members = zip(self.user_tower.towers, self.item_tower.towers)
        return tf.add_n([self._member_loss(user, item, batches[member_key(n)], training)
                         for n, (user, item) in enumerate(members)])

    def _member_loss(self, user: UserTower, item: ItemTower, features: dict, training: bool) -> tf.Tensor:
        """One loss term per positive, whether the batch holds single examples or chunks of every position."""
        if SLOTS not in features:
            return self._loss(user(features, training=training), item, features)
        real = tf.reshape(features[QUERY_MASK], [-1])

        def per_query(values: tf.Tensor) -> tf.Tensor:
            flat = tf.reshape(values, tf.concat([[-1], tf.shape(values)[2:]], axis=0))
            return tf.boolean_mask(flat, real)

        queries = {name: per_query(values) for name, values in features.items() if name not in CHUNK_FEATURES}
        return self._loss(user.embed(per_query(user.histories_at_positions(features, training)), queries), item, queries)

    def _loss(self, queries: tf.Tensor, item_tower: ItemTower, features: dict) -> tf.Tensor:
        return self.task(
            queries,
            item_tower(features),
            candidate_sampling_probability=features[ITEM_PROBABILITY],
            candidate_ids=features[ITEM_ID],
            compute_metrics=False,
        )
