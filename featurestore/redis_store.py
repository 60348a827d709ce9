"""The Redis backend of the feature store: versions and the atomic commit of a bundle.

Each bundle of the feature pipeline (``transforms.bundled``) commits its merged mutations
and the offsets they cover in one MULTI/EXEC, guarded by a compare-and-set on the offsets:
the mutations are written to stage hashes and merged into the version by ``merge.lua``
inside the same transaction, so a crash leaves either the whole bundle applied or none of
it, and a replayed bundle is refused. A backfill commits into a fresh version no reader
uses yet, then ``publish`` switches ``kr:current`` to it in one transaction, keeping the
previous version for rollback.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Iterator
from importlib import resources

import redis

from featurestore import layout
from featurestore.definitions import Feature, Mutation, Op
from kapparec.errors import KapparecError

STAGE_SHARDS = 16
# A backfill beats its heartbeat every ``HEARTBEAT_S``; a build silent for ``BUILD_GRACE_S`` crashed.
HEARTBEAT_S = 30.0
BUILD_GRACE_S = 15 * 60.0
_MERGE_LUA = resources.files("featurestore").joinpath("merge.lua").read_text()


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


class RedisFeatureStore:
    def __init__(self, url: str):
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._merge = self.client.register_script(_MERGE_LUA)

    # -- versions -------------------------------------------------------------------

    def current_version(self) -> str | None:
        return self.client.get(layout.CURRENT)

    def require_current_version(self) -> str:
        version = self.current_version()
        if version is None:
            raise KapparecError("the feature store is empty: run `kapparec backfill` or `kapparec stream` first")
        return version

    def versions(self) -> dict[str, dict]:
        return {v: json.loads(meta) for v, meta in sorted(self.client.hgetall(layout.VERSIONS).items())}

    def create_version(self, source: str, config: dict | None = None) -> str:
        """A new version in state "building", with the feature ``config`` it is built with pinned to it."""
        version = f"v{self.client.incr(layout.VERSION_SEQ)}"
        now = int(time.time() * 1000)
        self._set_meta(version, state="building", source=source, created_at=now, heartbeat_at=now, config=config)
        return version

    def heartbeat(self, version: str) -> None:
        """A build in progress says it is alive; ``collect_garbage`` drops builds that stopped saying so."""
        self._set_meta(version, heartbeat_at=int(time.time() * 1000))

    def pin_config(self, version: str, config: dict) -> None:
        self._set_meta(version, config=config)

    def _set_meta(self, version: str, **fields) -> None:
        meta = json.loads(self.client.hget(layout.VERSIONS, version) or "{}")
        meta.update(fields)
        self.client.hset(layout.VERSIONS, version, json.dumps(meta, sort_keys=True))

    def publish(self, version: str) -> None:
        """Make ``version`` current in one step; the old current becomes the rollback target."""
        self._set_meta(version, state="ready")
        with self.client.pipeline(transaction=True) as tx:
            old = self.current_version()
            if old and old != version:
                tx.set(layout.PREVIOUS, old)
            tx.set(layout.CURRENT, version)
            tx.execute()
        self.collect_garbage()

    def rollback(self) -> str:
        previous = self.client.get(layout.PREVIOUS)
        if previous is None:
            raise KapparecError("no previous feature version to roll back to")
        current = self.require_current_version()
        with self.client.pipeline(transaction=True) as tx:
            tx.set(layout.CURRENT, previous)
            tx.set(layout.PREVIOUS, current)
            tx.execute()
        return previous

    def collect_garbage(self, build_grace_s: float = BUILD_GRACE_S) -> list[str]:
        """Delete every version but the current and the previous one, and builds in progress:
        a build whose heartbeat is older than ``build_grace_s`` crashed, and goes too."""
        keep = {self.client.get(layout.CURRENT), self.client.get(layout.PREVIOUS)}
        crashed_before = (time.time() - build_grace_s) * 1000
        dropped = [
            v for v, meta in self.versions().items() if v not in keep and (
                meta.get("state") != "building" or meta.get("heartbeat_at", meta.get("created_at", 0)) < crashed_before)
        ]
        for version in dropped:
            self.drop_version(version)
        return dropped

    def drop_version(self, version: str) -> None:
        for chunk in _chunks(self.client.scan_iter(match=f"{layout.version_prefix(version)}*", count=1000), 500):
            self.client.unlink(*chunk)
        self.client.hdel(layout.VERSIONS, version)

    # -- log positions ----------------------------------------------------------------

    def offsets(self, version: str) -> dict[tuple[str, int], int]:
        raw = self.client.hgetall(layout.offsets_key(version))
        return {(f.rsplit("/", 1)[0], int(f.rsplit("/", 1)[1])): int(v) for f, v in raw.items()}

    def high_water(self, version: str, topic: str) -> dict[int, int]:
        raw = self.client.hgetall(layout.feature_key(version, Feature.HIGH_WATER, topic))
        return {int(p): int(v) for p, v in raw.items()}

    # -- batches ----------------------------------------------------------------------

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

    # -- dump -------------------------------------------------------------------------

    def dump(self, version: str) -> Iterator[str]:
        """Every key of a version as canonical, sorted JSON lines (stages excluded)."""
        prefix = layout.version_prefix(version)
        stage = f"{prefix}{layout.STAGE}:"
        keys = sorted(k for k in self.client.scan_iter(match=f"{prefix}*", count=1000) if not k.startswith(stage))
        for key in keys:
            kind = self.client.type(key)
            if kind == "hash":
                value = dict(sorted(self.client.hgetall(key).items()))
            elif kind == "set":
                value = sorted(self.client.smembers(key))
            elif kind == "zset":
                value = [[m, s] for m, s in self.client.zrange(key, 0, -1, withscores=True)]
            else:  # pragma: no cover - the layout writes no other type
                raise KapparecError(f"unexpected Redis type {kind} at {key}")
            yield json.dumps({"key": key[len(prefix):], "type": kind, "value": value}, sort_keys=True, separators=(",", ":"))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
