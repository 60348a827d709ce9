"""What the serving process keeps current in the background: the feature version, the snapshot, the model.

- ``LiveFeatures`` follows ``kr:current`` (a published backfill takes over), refreshes the
  ``Snapshot`` every ``refresh_s`` and knows whether Redis is reachable. While it is not, the
  request path is served from the last snapshot (degraded) and the refresher keeps trying, so
  serving recovers by itself when Redis returns.
- ``ModelWatcher`` follows the registry's production pointer: a promoted (or rolled-back)
  version loads in the background and replaces the served one in a single reference swap, so
  no request ever sees a half-loaded model. A version that cannot load is refused with one log
  line and the previous one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import redis

from featurestore import layout
from featurestore.reader import FeatureReader
from kapparec.errors import KapparecError
from serving.config import FunnelConfig
from serving.model import ModelLoadError, ServingModel
from serving.snapshot import Snapshot
from training.registry import ModelRegistry

log = logging.getLogger("kapparec.serving")

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# The request path's Redis calls fail after this long rather than hang a request.
REQUEST_TIMEOUT_S = 0.25


class Poller:
    """Runs ``check`` once at ``start`` (so the first state is there before serving), then every ``interval_s``."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def check(self) -> None:
        raise NotImplementedError

    def start(self):
        self.check()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()


class LiveFeatures(Poller):
    def __init__(self, redis_url: str, config: FunnelConfig, refresh_s: float = 2.0):
        super().__init__(refresh_s)
        self.redis_url, self.config = redis_url, config
        self.reader: FeatureReader | None = None
        self.snapshot = Snapshot.empty()
        self.healthy: bool | None = None  # None until the first check

    def check(self) -> None:
        try:
            version = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1).get(layout.CURRENT)
            if version is None:
                raise KapparecError("the feature store has no current version yet")
            version = version.decode()
            reader = self.reader if self.reader and self.reader.version == version else FeatureReader(
                self.redis_url, version, timeout_s=REQUEST_TIMEOUT_S)
            self.snapshot = Snapshot.take(reader, self.config, previous=self.snapshot)
            self.reader = reader
            self._set_health(True, f"features version {version}")
        except (*REDIS_ERRORS, KapparecError) as exc:
            self._set_health(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def mark_unreachable(self, reason: str) -> None:
        """A request found Redis unreachable: degrade at once rather than at the next refresh."""
        self._set_health(False, reason)

    def _set_health(self, healthy: bool, detail: str) -> None:
        if healthy and self.healthy is not True:
            log.info("event=features_%s detail=%r", "ready" if self.healthy is None else "recovered", detail)
        elif not healthy and self.healthy is not False:
            log.warning("event=features_degraded detail=%r", detail)
        self.healthy = healthy


class ModelWatcher(Poller):
    def __init__(self, models_dir: Path | None, poll_s: float = 1.0):
        super().__init__(poll_s)
        self.registry = ModelRegistry(models_dir)
        self.model: ServingModel | None = None
        self._refused: set[str] = set()

    def check(self) -> None:
        try:
            production = self.registry.production()
        except KapparecError as exc:
            self._refuse("production", str(exc))
            return
        wanted = production.id if production else None
        if wanted == (self.model.version if self.model else None) or wanted in self._refused:
            return
        if production is None:
            log.warning("event=model_unloaded detail='no production model: serving trending and popular items'")
            self.model = None
            return
        try:
            loaded = ServingModel.load(production)
        except ModelLoadError as exc:
            self._refuse(production.id, str(exc))
            return
        self.model = loaded  # one reference swap: a request uses either the old model or the new one
        log.info("event=model_loaded version=%s", loaded.version)

    def _refuse(self, version: str, reason: str) -> None:
        if version not in self._refused:
            self._refused.add(version)
            kept = self.model.version if self.model else "none"
            log.error("event=model_refused version=%s still_serving=%s reason=%r", version, kept, reason)
