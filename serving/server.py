"""The serving process: a gRPC server with health and reflection, one per core on one port.

A Python gRPC server holds the GIL, so ``--workers N`` forks N processes that each bind the
same port with SO_REUSEPORT and let the kernel spread connections (the multiprocessing
pattern of gRPC Python's examples). The parent only supervises and serves the summed metrics.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving import limits

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
# A second health entry that is NOT_SERVING while the store is unreadable (unreachable, busy, or not read
# within a bound; see LiveFeatures.readable): the API keeps answering, degraded.
FEATURES_HEALTH = f"{SERVICE_NAME}/features"
log = logging.getLogger("kapparec.serving")


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
    threads: int = 16
    refresh_s: float = 2.0


def _configure_logging() -> None:
    """Warnings from libraries; every event of our own (one line each, key=value) from INFO up."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM/SIGINT: one worker in-process, or N forked workers and a metrics parent."""
    _configure_logging()
    if settings.workers == 1:
        _start_metrics(settings.metrics_port)
        _run_worker(settings)
        return
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kapparec-metrics-"))
    _start_metrics(settings.metrics_port, multiprocess=True)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_run_worker, args=(settings,), daemon=True) for _ in range(settings.workers)]
    for worker in workers:
        worker.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5) and all(w.is_alive() for w in workers):
        pass
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
        worker.join(10)


def _start_metrics(port: int, multiprocess: bool = False) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if multiprocess:
        from prometheus_client import multiprocess as prometheus_multiprocess

        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry) if registry else start_http_server(port)


def _run_worker(settings: ServeSettings) -> None:
    _configure_logging()
    server, stop_background = build_server(settings)
    server.start()
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
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_RecommenderServicer_to_server(RecommenderService(
        features, models, events, config, settings.token, experiments=experiments, impressions=impressions), server)
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
