"""The store's one-writer lease: at most one continuous job merges into a store at a time.

Two stream jobs on one store would both merge the same offset ranges; the offsets'
compare-and-set refuses a replayed bundle, but not two writers racing on disjoint bundles. So a
stream job holds ``kr:lock:stream`` (SET NX with a time to live, renewed in the background).
Its value carries a fencing token (a counter that only grows) and the holder's name, and every
commit checks *inside* its script that the value is still this writer's (``merge.lua``): a
writer that was paused past its term and resumed finds another token there, and its late merge
is refused whole instead of applied.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from featurestore import layout
from kapparec.errors import KapparecError
from kapparec.threads import Periodic

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 10.0
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class WriterBusy(KapparecError):
    """Another writer holds the lease."""


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WriterLease:
    def __init__(self, redis_url: str, ttl_s: float = DEFAULT_TTL_S, holder: str | None = None):
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.ttl_ms = int(ttl_s * 1000)
        self.holder = holder or this_process()
        self.value = ""  # "<fencing token>@<holder>" while held
        self.lost = threading.Event()
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._renewer: _Renewer | None = None

    def try_acquire(self) -> bool:
        value = f"{self.client.incr(layout.FENCE_COUNTER)}@{self.holder}"
        if self.client.set(layout.STREAM_LOCK, value, nx=True, px=self.ttl_ms):
            self.value = value
            return True
        return False

    def acquire(self, wait: bool = False, poll_s: float = 0.5) -> "WriterLease":
        """Take the lease, or raise ``WriterBusy`` naming the holder (``wait``: until it is free)."""
        while not self.try_acquire():
            if not wait:
                holder = self.client.get(layout.STREAM_LOCK) or "a writer that just let go"
                raise WriterBusy(f"another stream job writes to this store (lease {holder}): stop it, or pass --wait")
            time.sleep(poll_s)
        self._renewer = _Renewer(self)
        self._renewer.start()
        return self

    def renew(self) -> bool:
        """Extends the lease by its term; False once another writer holds it (or none does)."""
        return bool(self._renew(keys=[layout.STREAM_LOCK], args=[self.value, self.ttl_ms]))

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer.join()
        if self.value:
            self._release(keys=[layout.STREAM_LOCK], args=[self.value])

    def __enter__(self) -> "WriterLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Renewer(Periodic):
    """Renews a held lease three times per term, until it is released or lost."""

    def __init__(self, lease: WriterLease):
        super().__init__(lease.ttl_ms / 3000, "writer-lease")
        self._lease = lease

    def tick(self) -> None:
        if not self._lease.renew():
            # Info, not an error: its commits are refused from now on, and the job's next one
            # fails with LeaseLost, which says so in the one line a user sees.
            log.info("event=writer_lease_lost lease=%s", self._lease.value)
            self._lease.lost.set()
            self.stop()
