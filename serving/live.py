"""What the serving process keeps current in the background: the feature version, the snapshot, the model.

- ``LiveFeatures`` follows ``kr:current`` (a published backfill takes over), refreshes the
  ``Snapshot`` every ``refresh_s`` and knows whether Redis is reachable. While it is not, the
  request path is served from the last snapshot (degraded) and the refresher keeps trying, so
  serving recovers by itself when Redis returns.
- ``ModelWatcher`` follows the registry's production pointer: a promoted (or rolled-back)
  version loads in the background and replaces the served one in a single reference swap, so
  no request ever sees a half-loaded model. A version that cannot load is refused with one log
  line and the previous one keeps serving.
- ``ExperimentsWatcher`` follows the experiments file the same way: a changed file is checked,
  the model versions its variants name are loaded, and only then does it replace the live
  experiments in one swap. A bad file is refused with one log line; the last good one stays.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from featurestore import layout
from featurestore.reader import FeatureReader
from kapparec.errors import KapparecError
from serving import experiments
from serving.config import FunnelConfig
from serving.model import ModelLoadError, ServingModel
from serving.snapshot import Snapshot
from modelfiles.registry import ModelRegistry

log = logging.getLogger("kapparec.serving")

# Every Redis error degrades, not only an unreachable Redis: one that answers BUSY (another
# client's long script) or LOADING serves nothing either, and a request fails no more than a
# refresh for it; a degraded page comes from the last good snapshot.
REDIS_ERRORS = (redis.exceptions.RedisError,)
# The request path's Redis calls fail after this long rather than hang a request.
REQUEST_TIMEOUT_S = 0.25
# A timeout can be one slow moment (a loaded host, a long script): it degrades its own request,
# and every request in flight meets the same moment at once, so a count of timeouts says nothing.
# Only timeouts with no read succeeding for this long degrade every request until the next check.
# Any other Redis error (refused, BUSY, LOADING) degrades at once, because every request would meet it.
TIMEOUT_SPELL_S = 1.0
# The background snapshot's reads (a 100,000-item catalog, every scope's rankings) are bulk reads
# that no request waits for. Under the request timeout they failed on a loaded machine at every
# refresh, and the server stayed degraded, serving an empty snapshot, from its start on.
SNAPSHOT_TIMEOUT_S = 5.0


# The collector's generation thresholds: Python's defaults are (700, 10, 10), so a full collection
# runs a tenth as often here (see ``freeze_heap``).
GC_THRESHOLDS = (700, 10, 100)


def freeze_heap(collect: bool = False) -> None:
    """Exempt what is loaded now (the catalog, the model) from Python's cyclic garbage collector.

    A serving process holds about 650,000 long-lived objects (a 100,000-item catalog, the model's
    lookups); each full collection walked them all and stopped every request for 0.8-1 s (measured
    in-process: two in 5,800 requests). Frozen objects are still freed by reference counting, which
    frees an old catalog (no reference cycles). A swapped-out model has cycles, so a model load
    (``collect``) first collects everything once, then freezes.

    Requests leave long-lived objects too: the caches' entries, which reference counting frees (they
    hold no cycles). A full collection walks whatever of them is still tracked, and every request
    waits through it, so full collections run a tenth as often as Python's default
    (``GC_THRESHOLDS``). Cycles are still found, and the young generations still collect each
    request's own garbage at once.
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Poller:
    """Runs ``check`` once at ``start`` (so the first state is there before serving), then every ``interval_s``.

    A check that raises is logged and the next one runs as planned: the thread that keeps
    serving's state current must outlive any one failure."""

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
            try:
                self.check()
            except Exception:  # noqa: BLE001 - logged; the thread lives on
                log.exception("event=check_failed poller=%s", type(self).__name__)


class LiveFeatures(Poller):
    def __init__(self, redis_url: str, config: FunnelConfig, refresh_s: float = 2.0):
        super().__init__(refresh_s)
        self.redis_url, self.config = redis_url, config
        self.reader: FeatureReader | None = None  # the request path's, with its short timeout
        self._snapshot_reader: FeatureReader | None = None
        self.snapshot = Snapshot.empty()
        self.healthy: bool | None = None  # None until the first check
        self._read_at: float | None = None  # when a check last read the store whole
        self._timeouts_since: float | None = None  # the first timeout since a read last succeeded
        # A check that hangs on its timeouts reports nothing; past this, the store counts as unreadable.
        self.unreadable_after_s = 3 * refresh_s + SNAPSHOT_TIMEOUT_S

    def check(self) -> None:
        try:
            version = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1).get(layout.CURRENT)
            if version is None:
                raise KapparecError("the feature store has no current version yet")
            version = version.decode()
            reader = self._reader_of(self.reader, version, REQUEST_TIMEOUT_S)
            self._snapshot_reader = self._reader_of(self._snapshot_reader, version, SNAPSHOT_TIMEOUT_S)
            previous = self.snapshot
            self.snapshot = Snapshot.take(self._snapshot_reader, self.config, previous=previous)
            if self.snapshot.catalog is not previous.catalog:
                freeze_heap()
            self.reader = reader
            self._read_at = time.monotonic()
            self._timeouts_since = None
            self._set_health(True, f"features version {version}")
        except (*REDIS_ERRORS, KapparecError) as exc:
            self._set_health(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _reader_of(self, current: FeatureReader | None, version: str, timeout_s: float) -> FeatureReader:
        return current if current and current.version == version else FeatureReader(self.redis_url, version, timeout_s=timeout_s)

    def readable(self) -> bool:
        """What the features' health reports: the last check read the store, and that was less than
        ``unreadable_after_s`` ago."""
        return bool(self.healthy) and self._read_at is not None and (
            time.monotonic() - self._read_at < self.unreadable_after_s)

    def request_failed(self, error: Exception) -> None:
        """A request's read failed: degrade now rather than at the next refresh, unless it is a
        timeout within ``TIMEOUT_SPELL_S`` of the first since a read succeeded."""
        if isinstance(error, redis.exceptions.TimeoutError):
            now = time.monotonic()
            if self._timeouts_since is None:
                self._timeouts_since = now
            if now - self._timeouts_since < TIMEOUT_SPELL_S:
                return
        self._set_health(False, f"{type(error).__name__}: {error}")

    def request_read(self) -> None:
        """A request's read succeeded: the spell of timeouts, if any, is over."""
        self._timeouts_since = None

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
        freeze_heap(collect=True)
        log.info("event=model_loaded version=%s ranker=%s", loaded.version, "learned" if loaded.ranker else "blend")

    def _refuse(self, version: str, reason: str) -> None:
        if version not in self._refused:
            self._refused.add(version)
            kept = self.model.version if self.model else "none"
            log.error("event=model_refused version=%s still_serving=%s reason=%r", version, kept, reason)


@dataclass(frozen=True)
class LiveExperiments:
    """What the experiments file asks for, checked and with every model it names loaded."""

    file: experiments.ExperimentsFile = experiments.ExperimentsFile()
    configs: dict[tuple[str, str], FunnelConfig] = field(default_factory=dict)  # (experiment, variant)
    models: dict[str, ServingModel] = field(default_factory=dict)  # by model version

    def assign(self, user_id: str) -> experiments.Bucket | None:
        return experiments.assign(self.file, user_id)


class ExperimentsWatcher(Poller):
    def __init__(self, path: Path | None, registry: ModelRegistry, base: FunnelConfig, poll_s: float = 1.0):
        super().__init__(poll_s)
        self.path, self.registry, self.base = path, registry, base
        self.live = LiveExperiments()
        self._seen: tuple | None = None  # the file's (mtime, size) last acted on, good or bad

    def check(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._seen:
            return
        self._seen = signature
        try:
            live = self._load()
        except KapparecError as exc:
            log.error("event=experiments_refused file=%s kept=%s reason=%r", self.path, self._names(self.live), str(exc))
            return
        self.live = live  # one swap: a request sees the old experiments or the new ones, whole
        if live.models:
            freeze_heap(collect=True)
        log.info("event=experiments_loaded file=%s experiments=%s", self.path, self._names(live))

    def _load(self) -> LiveExperiments:
        parsed = experiments.load(self.path)
        configs = {(e.name, v.name): v.funnel_config(self.base) for e in parsed.experiment for v in e.variant}
        models = {}
        for version in sorted(parsed.model_versions()):
            loaded = self.live.models.get(version)
            models[version] = loaded or ServingModel.load(self.registry.get(version))
        return LiveExperiments(parsed, configs, models)

    @staticmethod
    def _names(live: LiveExperiments) -> str:
        return ",".join(e.name for e in live.file.experiment) or "none"
