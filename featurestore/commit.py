"""The commit of one bundle: its merged mutations, encoded in one argument that ``merge.lua`` checks and merges.

Each bundle of the feature pipeline (``transforms.bundled``) commits its mutations and the
offsets they cover together: one script call checks the writer's lease, the offsets
(compare-and-set) and every mutation before it writes anything, then merges them all and moves
the offsets. The mutations travel grouped by target key, as one JSON argument: packing one
argument per field cost redis-py more than the merge itself, and the script checks each key's
type and indexes its expiry once. A crash, a replayed bundle, a fenced-off
writer or a malformed mutation leaves the whole bundle applied or none of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from importlib import resources

import orjson
import redis

from featurestore import layout
from featurestore.definitions import Feature, Mutation, Op
from kapparec.errors import KapparecError

MERGE_LUA = resources.files("featurestore").joinpath("merge.lua").read_text()


def staged_attribute(mutation: Mutation) -> str:
    """What every mutation of one target key shares, sent once per key (see merge.lua)."""
    op = mutation.op
    if op == Op.COUNT:
        return mutation.order  # a windowed key's expiry; "" for a key without a window
    if op == Op.TOP:
        return str(mutation.limit)
    if op == Op.DISTINCT:
        return f"{mutation.order}{layout.STAGE_SEPARATOR}{mutation.limit}"
    return ""


def staged_value(mutation: Mutation) -> str:
    """A mutation's value as the merge script reads it (see merge.lua)."""
    op = mutation.op
    if op == Op.TOP:
        return f"{mutation.value!r}"
    if op == Op.LATEST:
        return f"{mutation.order}{layout.LATEST_SEPARATOR}{mutation.value}"
    if op == Op.ADD:
        return ""
    return str(int(mutation.value))


def encode_bundle(mutations: Iterable[Mutation]) -> bytes:
    """The bundle as the merge script's one argument: JSON ``[[op, feature, entity, attribute,
    [field, value, ...]], ...]``, grouped by target key so the script checks, reads and writes
    each key once. A field given twice keeps its last value."""
    groups: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for mutation in mutations:
        group = (mutation.op, mutation.feature, mutation.entity or layout.EMPTY_ENTITY, staged_attribute(mutation))
        fields = groups.get(group)
        if fields is None:
            fields = groups[group] = {}
        fields[mutation.field] = staged_value(mutation)
    return orjson.dumps([[*group, [part for pair in fields.items() for part in pair]] for group, fields in groups.items()])


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
        mutations: Iterable[Mutation] | bytes,
        expected: dict[tuple[str, int], int | None],
        offsets: dict[tuple[str, int], int],
        lease: str = "",
    ) -> int:
        """Merge ``mutations`` (or a bundle ``encode_bundle`` made of them) and move the committed
        offsets from ``expected`` (None: absent) to ``offsets``, all or nothing, in one script
        (``merge.lua``).

        Refused whole, with nothing applied: a bundle whose offsets moved on (``StaleBundle``:
        a replay, a retry), a writer whose ``lease`` is no longer the store's (``LeaseLost``),
        and a mutation the merge cannot apply. That the whole bundle or none of it lands is
        what makes its effect exactly-once.
        """
        if set(expected) != set(offsets):
            raise ValueError("a commit moves exactly the offsets it expected")
        positions = list(offsets)
        args = [layout.version_prefix(version), lease, len(positions),
                *(layout.offset_field(t, p) for t, p in positions),
                *("" if expected[position] is None else str(expected[position]) for position in positions),
                *(str(offsets[position]) for position in positions),
                mutations if isinstance(mutations, bytes) else encode_bundle(mutations)]
        try:
            merged = self._merge(keys=[layout.offsets_key(version), layout.STREAM_LOCK], args=args)
        except redis.ResponseError as exc:
            raise _refusal(version, str(exc)) from None
        return int(merged)
    def advance_offsets(self, version: str, offsets: dict[tuple[str, int], int]) -> None:
        """Move offsets to a bounded read's ends: records missing at a range's end (dead
        letters, compaction) leave nothing to commit, but the range was read."""
        if offsets:
            self.client.hset(layout.offsets_key(version), mapping={layout.offset_field(t, p): o for (t, p), o in offsets.items()})
