"""The serving process: a gRPC server with health and reflection, one per core on one port.

A Python gRPC server holds the GIL, so ``--workers N`` forks N processes that each bind the
same port with SO_REUSEPORT and let the kernel spread connections (the multiprocessing
pattern of gRPC Python's examples). The parent only supervises and serves the summed metrics;
it holds the port for the server's life, so a second ``serve`` cannot join in through SO_REUSEPORT.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kapparec.errors import KapparecError
from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving import limits
from serving.admission import AdmittingPool

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
RPCS = tuple(pb.DESCRIPTOR.services_by_name["Recommender"].methods_by_name)
# A second health entry that is NOT_SERVING while the store is unreadable (unreachable, busy, or not read
# within a bound; see LiveFeatures.readable): the API keeps answering, degraded.
FEATURES_HEALTH = f"{SERVICE_NAME}/features"
log = logging.getLogger("kapparec.serving")
# The server's own pool: health checks, reflection streams and refusing what is over the cap.
SERVER_THREADS = 4
QUEUED_PER_ADMITTED = 8
# gRPC's own bound on queued calls refuses health checks too, so it sits far above what the cap
# admits: a flood meets the cap's RESOURCE_EXHAUSTED long before it reaches this.
MIN_QUEUE_BOUND = 256


@dataclass(frozen=True)
class ServeSettings:
    port: int
    metrics_port: int
    workers: int
    bootstrap: str
    redis_url: str
    models_dir: Path | None
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    experiments_file: Path | None = None
    # Requests a worker holds at once, running or waiting for one of its ``threads``; more are
    # answered RESOURCE_EXHAUSTED at once (see serving.admission). Connections spread over the
    # workers unevenly, so a cap near the callers per worker refuses callers the server keeps up
    # with; under sustained overload a longer line only makes every admitted request wait longer.
    max_in_flight: int = 32
    threads: int = 4
    refresh_s: float = 2.0


def _configure_logging() -> None:
    """Warnings from libraries; every event of our own (one line each, key=value) from INFO up."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM/SIGINT: one worker in-process, or N forked workers and a metrics parent.

    Refused with a ``KapparecError`` when this host already serves the port; a worker that fails
    stops the others and raises one naming its cause."""
    _configure_logging()
    with port_claim(settings.port):
        if settings.workers == 1:
            _start_metrics(settings.metrics_port)
            _run_worker(settings)
            return
        _supervise(settings)


def _supervise(settings: ServeSettings) -> None:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kapparec-metrics-"))
    _start_metrics(settings.metrics_port, multiprocess=True)
    context = multiprocessing.get_context("spawn")
    failures = context.SimpleQueue()
    workers = [context.Process(target=_run_worker, args=(settings, failures), daemon=True)
               for _ in range(settings.workers)]
    for worker in workers:
        worker.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5) and all(w.is_alive() for w in workers):
        pass
    failed = [w for w in workers if not w.is_alive()] if not stop.is_set() else []
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
        worker.join(10)
    if failed:
        cause = failures.get() if not failures.empty() else f"exit code {failed[0].exitcode}"
        raise KapparecError(f"a serving worker (pid {failed[0].pid}) failed, so every worker stopped: {cause}")


@contextlib.contextmanager
def port_claim(port: int) -> Iterator[None]:
    """Hold ``port`` for this ``serve`` or refuse to start: workers bind it with SO_REUSEPORT, which
    would let a second server on this host share the port's connections silently. A lock file per
    port covers a second ``serve`` still starting up; a bind without SO_REUSEPORT covers a port
    that something already listens on."""
    lock_path = Path(tempfile.gettempdir()) / f"kapparec-serve-{port}.lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KapparecError(f"port {port} is already served by another kapparec serve on this host") from None
        _refuse_if_listening(port)
        yield


def _refuse_if_listening(port: int) -> None:
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # gRPC's [::] takes IPv4 too
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("::", port))
    except OSError as exc:
        raise KapparecError(f"port {port} is already in use on this host: {exc.strerror}") from None
    finally:
        probe.close()


def _start_metrics(port: int, multiprocess: bool = False) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if multiprocess:
        from prometheus_client import multiprocess as prometheus_multiprocess

        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry) if registry else start_http_server(port)


def _run_worker(settings: ServeSettings, failures=None) -> None:
    """Serve until SIGTERM/SIGINT. Under a supervisor, a failure is put on ``failures`` as one line
    before the process exits non-zero, so the supervisor can name it."""
    _configure_logging()
    try:
        server, stop_background = build_server(settings)
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is reported as one line
        cause = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if failures is None:
            raise KapparecError(f"serving failed to start: {cause}") from None
        failures.put(cause)
        sys.exit(1)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    log.info("event=serving port=%d pid=%d", settings.port, os.getpid())
    done.wait()
    stop_background()
    server.stop(grace=2).wait()


def build_server(settings: ServeSettings) -> tuple[grpc.Server, callable]:
    from serving import metrics
    from serving.config import FunnelConfig
    from serving.impressions import ImpressionLog
    from serving.live import ExperimentsWatcher, LiveFeatures, ModelWatcher
    from serving.log_writer import EventWriter
    from serving.service import RecommenderService

    config = FunnelConfig()
    health_servicer = health.HealthServicer()
    features = LiveFeatures(settings.redis_url, config, settings.refresh_s).start()
    models = ModelWatcher(settings.models_dir).start()
    experiments = ExperimentsWatcher(settings.experiments_file, models.registry, config).start()
    impressions = ImpressionLog(settings.bootstrap).start()
    events = EventWriter(settings.bootstrap)
    own_pool = futures.ThreadPoolExecutor(max_workers=SERVER_THREADS, thread_name_prefix="server")
    requests = AdmittingPool(settings.threads, settings.max_in_flight, overflow=own_pool)
    server = grpc.server(
        own_pool,
        # gRPC's own bound only backs the cap up: the queue never grows without end.
        maximum_concurrent_rpcs=max(settings.max_in_flight * QUEUED_PER_ADMITTED, MIN_QUEUE_BOUND),
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
        ],
    )
    service = RecommenderService(features, models, events, config, settings.token, experiments=experiments,
                                 impressions=impressions, admitted=settings.max_in_flight)
    on_pool = {rpc: requests.runs(getattr(service, rpc)) for rpc in RPCS}
    pb_grpc.add_RecommenderServicer_to_server(SimpleNamespace(**on_pool), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"[::]:{settings.port}"
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)

    stop = threading.Event()

    def publish_health() -> None:
        # Health and the metrics follow the background state; the API itself is always SERVING.
        shown_version = None
        while True:
            healthy = features.readable()
            metrics.FEATURES_HEALTHY.set(1 if healthy else 0)
            version = models.model.version if models.model else None
            if version != shown_version:
                if shown_version:
                    metrics.MODEL_LOADED.labels(shown_version).set(0)
                if version:
                    metrics.MODEL_LOADED.labels(version).set(1)
                shown_version = version
            serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
            health_servicer.set("", serving)
            health_servicer.set(SERVICE_NAME, serving)
            health_servicer.set(FEATURES_HEALTH, serving if healthy else not_serving)
            if stop.wait(0.5):
                return

    threading.Thread(target=publish_health, name="health", daemon=True).start()

    def stop_background() -> None:
        stop.set()
        features.stop()
        models.stop()
        experiments.stop()
        impressions.stop()
        events.close()
        metrics.flush()  # the updates still queued reach the metrics before the worker exits

    return server, stop_background


def wait_until_serving(address: str, alive: Callable[[], bool], timeout_s: float,
                       credentials: grpc.ChannelCredentials | None = None) -> bool:
    """Whether a server at ``address`` answered a health check SERVING before ``timeout_s`` (or ``alive`` turned False).

    Each attempt opens a fresh channel: a channel that failed while the server was still loading
    waits out a growing reconnect backoff, and with several workers on one port a new connection
    may reach a worker that is ready when the first one was not.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        with channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
        time.sleep(0.3)
    return False
