"""AdmittingPool: a few threads run what it admits, a bounded number wait for them, and what is
beyond the bound runs at once elsewhere, marked refused."""

from __future__ import annotations

import threading
from concurrent import futures

from serving import admission
from serving.admission import AdmittingPool


def _held(release: threading.Event, started: threading.Semaphore):
    def call() -> tuple[bool, str]:
        started.release()
        release.wait(10)
        return admission.refused(), threading.current_thread().name
    return call


def _refusal() -> tuple[bool, str]:
    return admission.refused(), threading.current_thread().name


def test_calls_beyond_the_admitted_run_at_once_on_the_overflow_marked_refused():
    release, started = threading.Event(), threading.Semaphore(0)
    with futures.ThreadPoolExecutor(2, thread_name_prefix="overflow") as overflow:
        pool = AdmittingPool(threads=1, admitted=2, overflow=overflow)
        running = pool.submit(_held(release, started))
        waiting = pool.submit(_held(release, started))  # admitted: waits for the one thread
        assert started.acquire(timeout=10)
        refused = pool.submit(_refusal)
        assert refused.result(timeout=10)[0] is True  # answered while both admitted calls are held
        assert refused.result()[1].startswith("overflow")
        assert not waiting.done()
        release.set()
        assert [f.result(timeout=10)[0] for f in (running, waiting)] == [False, False]
        assert {f.result()[1] for f in (running, waiting)} == {"requests_0"}
        # The slots came back: the next call is admitted again, and refused() was only the refusal's.
        assert pool.submit(_refusal).result(timeout=10) == (False, "requests_0")
        assert admission.refused() is False
        pool.shutdown()


def test_a_handler_marked_to_run_on_the_pool_carries_it_for_grpc():
    with futures.ThreadPoolExecutor(1) as overflow, AdmittingPool(threads=1, admitted=1, overflow=overflow) as pool:
        handler = pool.runs(lambda request, context: (request, context))
        assert handler.experimental_thread_pool is pool  # where gRPC Python looks for a method's own executor
        assert handler("request", "context") == ("request", "context")
