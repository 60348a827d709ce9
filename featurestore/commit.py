"""The commit of one bundle: its merged mutations, encoded in one argument that ``merge.lua`` checks and merges.

Each bundle of the feature pipeline (``transforms.bundled``) commits its mutations and the
offsets they cover together: one script call checks the writer's lease, the offsets
(compare-and-set) and every mutation before it writes anything, then merges them all and moves
the offsets. The mutations travel grouped by target key, as one MessagePack argument: packing one
argument per field cost redis-py more than the merge itself, and the script checks each key's
type and indexes its expiry once. A crash, a replayed bundle, a fenced-off writer or a
malformed mutation leaves the whole bundle applied or none of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from importlib import resources

import msgspec
import redis

from featurestore import layout
from featurestore.definitions import Feature, Mutation, Op
from kapparec.errors import KapparecError

_MSGPACK = msgspec.msgpack.Encoder()


def _lua_literal(value: str | dict) -> str:
    """A string or a table of them as Lua source; every byte but letters, digits and "_" escaped as
    \\ddd, so a separator (a tab, a control byte) reads as itself."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua_literal(k)}] = {_lua_literal(v)}" for k, v in value.items()) + "}"
    return '"' + "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or b == ord("_")) else f"\\{b:03d}"
                         for b in value.encode()) + '"'


# The layout the script writes, as its first line: defined once, in featurestore/layout.py.
MERGE_LUA = (f"local LAYOUT = {_lua_literal(layout.merge_contract())}\n"
             + resources.files("featurestore").joinpath("merge.lua").read_text())


# A group: (op, feature, entity, attribute) and its {field: value}, as ``MergedMutations`` holds them.
Group = tuple[tuple[str, str, str, object], dict]

_NUMERIC = frozenset({Op.COUNT, Op.TALLY, Op.DISTINCT, Op.MAX})
# A group's attribute from one of its mutations (see ``MergedMutations``).
_ATTRIBUTE = {Op.COUNT: lambda m: m.order, Op.TOP: lambda m: m.limit, Op.DISTINCT: lambda m: (m.order, m.limit),
              Op.ADD: lambda m: m.order or None}


def _staged_value(mutation: Mutation):
    """A mutation's value as its group holds it."""
    op = mutation.op
    if op == Op.LATEST:
        return (mutation.order, mutation.value)
    if op == Op.ADD:
        return None
    if op == Op.TOP:
        return float(mutation.value)
    if op in _NUMERIC:
        return int(mutation.value)
    return mutation.value  # an op the merge does not know: the script refuses the bundle


def group_mutations(mutations: Iterable[Mutation]) -> list[Group]:
    """Mutations grouped by target key; a field given twice keeps its last value."""
    groups: dict[tuple[str, str, str, object], dict] = {}
    for mutation in mutations:
        attribute = _ATTRIBUTE.get(mutation.op)
        key = (mutation.op, mutation.feature, mutation.entity, attribute and attribute(mutation))
        groups.setdefault(key, {})[mutation.field] = _staged_value(mutation)
    return list(groups.items())


def encode_bundle(groups: Iterable[Group]) -> bytes:
    """The bundle as the merge script's one argument: MessagePack ``[[op, feature, entity,
    attribute, fields], ...]``, one group per target key, so the script checks, reads and writes
    each key once; ``fields`` is {field: value} as the group holds it (members only, for ADD), and
    the attribute travels as the group holds it ("" for none). MessagePack rather than JSON:
    Redis's Lua decodes it in two thirds of the time, and the decode is paid on the store's one thread."""
    empty = layout.EMPTY_ENTITY
    return _MSGPACK.encode([
        (op, feature, entity or empty, "" if attribute is None else attribute, list(fields) if op == Op.ADD else fields)
        for (op, feature, entity, attribute), fields in groups
    ])


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
        return f"b{int(time.time() * 1000)}-{self.client.incr(layout.BATCH_SEQ)}"

    def commit(
        self,
        version: str,
        mutations: Iterable[Mutation] | bytes,
        expected: dict[tuple[str, int], int | None],
        offsets: dict[tuple[str, int], int],
        lease: str = "",
    ) -> int:
        """Merge ``mutations`` (or the bundle ``encode_bundle`` made of their groups) and move the committed
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
                mutations if isinstance(mutations, bytes) else encode_bundle(group_mutations(mutations))]
        try:
            merged = self._merge(keys=[layout.offsets_key(version), layout.STREAM_LOCK], args=args)
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                # Another client's script holds Redis, so the merge never ran: Redis is away for
                # now (the job waits for it), not refusing the bundle.
                raise
            raise _refusal(version, str(exc)) from None
        return int(merged)

    def advance_offsets(self, version: str, offsets: dict[tuple[str, int], int], lease: str = "") -> None:
        """Move offsets to a bounded read's ends: records missing at a range's end (compaction,
        transaction markers) leave nothing to commit, but the range was read.

        Moved as a commit of nothing (``commit``): under the writer's ``lease``, and from the
        offsets read here (compare-and-set), so a writer whose lease lapsed cannot rewind the
        offsets of the one that took over (which would then apply its records twice). An offset
        already at or past its end stays where it is."""
        committed = self.offsets(version)
        behind = {position: end for position, end in offsets.items() if committed.get(position, -1) < end}
        if behind:
            self.commit(version, [], {position: committed.get(position) for position in behind}, behind, lease)
