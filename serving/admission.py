"""Admission to a worker's request threads: a few threads run the requests, a bounded number of
requests wait for them, and any beyond are refused at once.

A handler holds the GIL for most of its CPU time, so threads beyond a few only take turns at it,
and every turn is a thread switch that costs CPU: the admitted requests beyond the threads wait in
a bounded queue instead. A call over the bound is refused on the server's own pool, where health
checks and reflection run too, so none of them waits behind the admitted requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures

_refusing = threading.local()


class AdmittingPool(futures.ThreadPoolExecutor):
    """The threads that run a servicer's handlers, holding at most ``admitted`` calls at once,
    running or waiting for a thread. A call beyond that runs at once on ``overflow``, where
    ``refused()`` is True while its handler runs, so the handler refuses it without waiting
    behind the admitted ones."""

    def __init__(self, threads: int, admitted: int, overflow: futures.Executor):
        super().__init__(max_workers=threads, thread_name_prefix="requests")
        self._slots = threading.BoundedSemaphore(admitted)
        self._overflow = overflow

    def submit(self, fn, /, *args, **kwargs) -> futures.Future:
        if not self._slots.acquire(blocking=False):
            return self._overflow.submit(_refused, fn, *args, **kwargs)
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _: futures.Future) -> None:
        self._slots.release()

    def runs(self, behavior: Callable) -> Callable:
        """``behavior`` (an RPC's handler) as gRPC runs it on this pool: gRPC Python takes a
        method's own executor from its handler's ``experimental_thread_pool``."""
        def on_pool(request, context):
            return behavior(request, context)

        on_pool.experimental_thread_pool = self
        return on_pool


def refused() -> bool:
    """Whether the running handler's call is one its ``AdmittingPool`` had no room for."""
    return getattr(_refusing, "active", False)


def _refused(fn: Callable, *args, **kwargs):
    _refusing.active = True
    try:
        return fn(*args, **kwargs)
    finally:
        _refusing.active = False
