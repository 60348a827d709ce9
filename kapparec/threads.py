"""Background threads that live exactly as long as a ``with`` block."""

from __future__ import annotations

import logging
import threading

import redis

log = logging.getLogger(__name__)


class Beside(threading.Thread):
    """A daemon thread started on entering a ``with`` block and stopped (``_done`` set) and joined on leaving it."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name, daemon=True)
        self._done = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()


class Sampler(Beside):
    """Calls ``sample`` on entering the block, every ``interval_s``, and once more on leaving it, so a
    figure over the block has samples at both its ends."""

    def __init__(self, interval_s: float, name: str):
        super().__init__(name)
        self.interval_s = interval_s

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        self.sample()
        while not self._done.wait(self.interval_s):
            self.sample()
        self.sample()


class Periodic(Beside):
    """Calls ``tick`` every ``interval_s`` until it is stopped (``stop``, or leaving the ``with`` block).

    A Redis error in one tick is logged and the next tick tries again. Redis answers BUSY while
    another client's long script runs, and times out or refuses while it restarts: a thread that
    ended there would leave its job without it for good (a lease no longer renewed, a stop
    request never passed on, a heartbeat that stops), while everything else recovered.
    """

    def __init__(self, interval_s: float, name: str):
        super().__init__(name)
        self.interval_s = interval_s

    def tick(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        failing = False
        while not self._done.wait(self.interval_s):
            try:
                self.tick()
            except redis.RedisError as exc:
                if not failing:
                    log.warning("event=redis_error thread=%s error=%r retry_in_s=%g", self.name, str(exc), self.interval_s)
                failing = True
                continue
            if failing:
                log.info("event=redis_recovered thread=%s", self.name)
            failing = False
