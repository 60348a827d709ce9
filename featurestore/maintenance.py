"""Dumping a version (canonical, sorted JSON lines) and collecting garbage: old versions and crashed builds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator

from featurestore import layout
from kapparec.errors import KapparecError

# A backfill beats its heartbeat every ``HEARTBEAT_S``; a build silent for ``BUILD_GRACE_S`` crashed.
HEARTBEAT_S = 30.0
BUILD_GRACE_S = 15 * 60.0


class Maintenance:
    """The dump and garbage-collection half of ``RedisFeatureStore``."""

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

    def stats(self, version: str) -> dict[str, dict[str, int]]:
        """Keys and bytes (Redis ``MEMORY USAGE``) per feature of a version, largest first."""
        prefix = layout.version_prefix(version)
        totals: dict[str, dict[str, int]] = {}
        for chunk in _chunks(self.client.scan_iter(match=f"{prefix}*", count=1000), 500):
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.memory_usage(key)
            for key, size in zip(chunk, pipe.execute()):
                feature = key[len(prefix):].split(":", 1)[0]
                entry = totals.setdefault(feature, {"keys": 0, "bytes": 0})
                entry["keys"] += 1
                entry["bytes"] += size or 0
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]["bytes"]))

    def dump(self, version: str) -> Iterator[str]:
        """Every key of a version as canonical, sorted JSON lines."""
        prefix = layout.version_prefix(version)
        keys = sorted(self.client.scan_iter(match=f"{prefix}*", count=1000))
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
