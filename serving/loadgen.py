"""Closed-loop load generator processes for the serving benchmark (no TensorFlow: spawned cheaply).

Each client process opens its own channel, waits until every client is connected, then calls
one RPC back to back for the given time, recording every latency. The parent sums the processes.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc

RECOMMEND, EMPTY = "recommend", "empty"
# How long a client process may take to start and connect.
CONNECT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Load:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    errors: int
    requests: int
    # Recommend answers by ``served_from``: a run served degraded (from the snapshot alone) measures
    # a cheaper request than the funnel, so the figures say which one they measured.
    served_from: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "qps": self.qps,
                "errors": self.errors, "requests": self.requests} | ({"served_from": self.served_from} if self.served_from else {})


def run_load(address: str, rpc: str, clients: int, seconds: float, users: list[str], k: int = 20) -> Load:
    """``clients`` processes call ``rpc`` back to back for ``seconds``, all starting together once
    every one of them is connected (on a loaded machine spawning them takes a while)."""
    finished = in_processes(_client, [(address, rpc, seconds, users, k, seed) for seed in range(clients)], seconds)
    latencies = np.concatenate([latency for latency, _, _ in finished])
    errors = sum(errors for _, errors, _ in finished)
    origins = sum((origins for _, _, origins in finished), Counter())
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1000).round(3) if len(latencies) else (0.0, 0.0, 0.0)
    return Load(float(p50), float(p95), float(p99), round(len(latencies) / seconds, 1), errors, len(latencies) + errors,
                dict(sorted(origins.items())))


def in_processes(target, arguments: list[tuple], seconds: float) -> list:
    """``target(*args, ready, results)`` in a spawned process per entry of ``arguments``, released
    together once every one waits at ``ready``; what each put on ``results``."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(len(arguments) + 1), context.Queue()
    processes = [context.Process(target=target, args=(*args, ready, results), daemon=True) for args in arguments]
    for process in processes:
        process.start()
    try:
        ready.wait(timeout=CONNECT_TIMEOUT_S)
        return [results.get(timeout=seconds + CONNECT_TIMEOUT_S) for _ in processes]
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()


def _client(address: str, rpc: str, seconds: float, users: list[str], k: int, seed: int, connected, results) -> None:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    if rpc == RECOMMEND:
        stub = pb_grpc.RecommenderStub(channel)
        order = np.random.default_rng(seed).permutation(len(users))
        requests = [pb.RecommendRequest(user_id=users[i], k=k) for i in order]
        call = stub.Recommend
    else:
        requests = [health_pb2.HealthCheckRequest()]
        call = health_pb2_grpc.HealthStub(channel).Check
    latencies, errors, n, origins = [], 0, 0, Counter()
    connected.wait(timeout=CONNECT_TIMEOUT_S)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        request = requests[n % len(requests)]
        n += 1
        began = time.perf_counter()
        try:
            response = call(request, timeout=10)
            latencies.append(time.perf_counter() - began)
            if rpc == RECOMMEND:
                origins[response.served_from] += 1
        except grpc.RpcError:
            errors += 1
    channel.close()
    results.put((np.asarray(latencies), errors, origins))
