"""Reads of committed state that a batch's transforms need (injected, picklable)."""

from __future__ import annotations

from featurestore import layout
from featurestore.definitions import Feature


class RedisSessionItems:
    """The items already stored per (user, session window) in a version, for co-occurrence.

    A batch only ever reads the state committed before it: its own writes sit in stage
    hashes until the driver merges them, so the lookup sees exactly the earlier log prefix.
    """

    def __init__(self, redis_url: str, version: str):
        self.redis_url, self.version = redis_url, version
        self._client = None

    def __getstate__(self):
        return {"redis_url": self.redis_url, "version": self.version, "_client": None}

    def lookup(self, entities: list[str]) -> dict[str, set[str]]:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        pipe = self._client.pipeline(transaction=False)
        for entity in entities:
            pipe.smembers(layout.feature_key(self.version, Feature.SESSION_ITEMS, entity))
        return {entity: members for entity, members in zip(entities, pipe.execute()) if members}
