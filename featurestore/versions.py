"""Feature versions: their metadata, the current and previous pointers, publish and rollback.

A backfill builds a fresh version no reader uses yet, beating a heartbeat while it builds; then
``publish`` switches ``kr:current`` to it in one transaction, keeping the previous version for
rollback. A version keeps the feature configuration it was built with.
"""

from __future__ import annotations

import json
import time

from featurestore import layout
from kapparec.errors import KapparecError, UsageError


class Versions:
    """The version half of ``RedisFeatureStore`` (``self.client``: a decoding Redis client)."""

    def current_version(self) -> str | None:
        return self.client.get(layout.CURRENT)

    def require_current_version(self) -> str:
        version = self.current_version()
        if version is None:
            raise KapparecError("the feature store is empty: run `kapparec backfill` or `kapparec stream` first")
        return version

    def require_version(self, version: str | None) -> str:
        """``version`` if the store has it (None: the current one); otherwise a one-line usage error."""
        version = version or self.require_current_version()
        if version not in self.versions():
            raise UsageError(f"no feature version {version!r} (see `kapparec features versions`)")
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
