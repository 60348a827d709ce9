"""The commit of one bundle: stage its merged mutations, then ``merge.lua`` checks and merges them.

Each bundle of the feature pipeline (``transforms.bundled``) commits its mutations and the
offsets they cover together: the mutations go to stage hashes and one script checks the
writer's lease, the offsets (compare-and-set) and every staged mutation before it writes
anything, then merges them all and moves the offsets. A crash, a replayed bundle, a fenced-off
writer or a malformed mutation leaves the whole bundle applied or none of it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from importlib import resources

import redis

from featurestore import layout
from featurestore.definitions import Feature, Mutation, Op
from kapparec.errors import KapparecError

STAGE_SHARDS = 16
MERGE_LUA = resources.files("featurestore").joinpath("merge.lua").read_text()


def encode_staged(mutation: Mutation) -> tuple[str, str]:
    """The (field, value) of a mutation in a stage hash (see merge.lua)."""
    sep = layout.STAGE_SEPARATOR
    field = sep.join((mutation.op, mutation.feature, mutation.entity or layout.EMPTY_ENTITY, mutation.field))
    if mutation.op == Op.TOP:
        value = f"{mutation.value!r}{sep}{mutation.limit}"
    elif mutation.op == Op.LATEST:
        value = f"{mutation.order}{layout.LATEST_SEPARATOR}{mutation.value}"
    elif mutation.op == Op.ADD:
        value = ""
    elif mutation.op == Op.TALLY or (mutation.op == Op.COUNT and not mutation.order):
        value = str(int(mutation.value))
    elif mutation.op == Op.COUNT:
        value = f"{int(mutation.value)}{sep}{mutation.order}"
    elif mutation.op == Op.DISTINCT:
        value = f"{int(mutation.value)}{sep}{mutation.order}{sep}{mutation.limit}"
    else:
        value = str(int(mutation.value))
    return field, value


def stage_shard(field: str) -> int:
    return zlib.crc32(field.encode()) % STAGE_SHARDS


class StaleBundle(KapparecError):
    """A bundle whose offsets were already committed past (a replay or a retry)."""


class LeaseLost(KapparecError):
    """A writer whose lease another writer took over: its late commit is refused."""


def _refusal(version: str, message: str) -> KapparecError:
    # redis-py wraps a script's error reply in a transaction as "Command # N (...) caused error: <reply>".
    reply = message.rsplit("caused error: ", 1)[-1]
    kind, _, detail = reply.partition(" ")
    if kind == "STALE":
        return StaleBundle(f"{version}: {detail}")
    if kind == "LEASE":
        return LeaseLost(f"{version}: {detail}")
    return KapparecError(f"{version}: the bundle was refused, nothing applied: {reply}")


class Commits:
    """The commit half of ``RedisFeatureStore`` (``self.client``, ``self._merge``: the merge script)."""

    def offsets(self, version: str) -> dict[tuple[str, int], int]:
        raw = self.client.hgetall(layout.offsets_key(version))
        return {(f.rsplit("/", 1)[0], int(f.rsplit("/", 1)[1])): int(v) for f, v in raw.items()}

    def high_water(self, version: str, topic: str) -> dict[int, int]:
        raw = self.client.hgetall(layout.feature_key(version, Feature.HIGH_WATER, topic))
        return {int(p): int(v) for p, v in raw.items()}

    def new_batch_id(self) -> str:
        return f"b{int(time.time() * 1000)}-{self.client.incr(f'{layout.ROOT}:batch_seq')}"

    def committed_offset(self, version: str, topic: str, partition: int) -> int | None:
        value = self.client.hget(layout.offsets_key(version), layout.offset_field(topic, partition))
        return None if value is None else int(value)

    def commit(
        self,
        version: str,
        mutations: Iterable[Mutation],
        expected: dict[tuple[str, int], int | None],
        offsets: dict[tuple[str, int], int],
        lease: str = "",
    ) -> int:
        """Merge ``mutations`` and move the committed offsets from ``expected`` (None: absent)
        to ``offsets``, all or nothing, in one script (``merge.lua``).

        Refused whole, with nothing applied: a bundle whose offsets moved on (``StaleBundle``:
        a replay, a retry), a writer whose ``lease`` is no longer the store's (``LeaseLost``),
        and a mutation the merge cannot apply. That the whole bundle or none of it lands is
        what makes its effect exactly-once.
        """
        if set(expected) != set(offsets):
            raise ValueError("a commit moves exactly the offsets it expected")
        stage = layout.stage_prefix(version, self.new_batch_id())
        shards: dict[str, dict[str, str]] = {}
        for mutation in mutations:
            field, value = encode_staged(mutation)
            shards.setdefault(f"{stage}{stage_shard(field)}", {})[field] = value
        positions = list(offsets)
        args = [layout.version_prefix(version), lease, len(positions),
                *(layout.offset_field(t, p) for t, p in positions),
                *("" if expected[position] is None else str(expected[position]) for position in positions),
                *(str(offsets[position]) for position in positions)]
        with self.client.pipeline(transaction=True) as tx:
            for shard, values in shards.items():
                tx.hset(shard, mapping=values)
            self._merge(keys=[layout.offsets_key(version), layout.STREAM_LOCK, *shards], args=args, client=tx)
            try:
                merged = tx.execute()[-1]
            except redis.ResponseError as exc:
                raise _refusal(version, str(exc)) from None
        return int(merged)
    def advance_offsets(self, version: str, offsets: dict[tuple[str, int], int]) -> None:
        """Move offsets to a bounded read's ends: records missing at a range's end (dead
        letters, compaction) leave nothing to commit, but the range was read."""
        if offsets:
            self.client.hset(layout.offsets_key(version), mapping={layout.offset_field(t, p): o for (t, p), o in offsets.items()})
