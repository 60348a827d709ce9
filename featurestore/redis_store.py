"""The Redis backend of the feature store: one client, and its three concerns in a module each.

``featurestore.versions`` (versions, publish, rollback), ``featurestore.commit`` (the
all-or-nothing commit of a bundle with the offsets it covers) and ``featurestore.maintenance``
(dump, garbage collection).
"""

from __future__ import annotations

import redis

from featurestore.commit import MERGE_LUA, Commits
from featurestore.maintenance import Maintenance
from featurestore.versions import Versions


class RedisFeatureStore(Versions, Commits, Maintenance):
    def __init__(self, url: str):
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._merge = self.client.register_script(MERGE_LUA)
