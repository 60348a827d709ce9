"""Closed-loop load generator processes for the serving benchmark (no TensorFlow: spawned cheaply).

Each client process opens its own channel, waits for a common start time, then calls one RPC
back to back until the end time, recording every latency. The parent sums the processes.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc

RECOMMEND, EMPTY = "recommend", "empty"
START_DELAY_S = 3.0


@dataclass(frozen=True)
class Load:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    errors: int
    requests: int

    def as_dict(self) -> dict:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "qps": self.qps,
                "errors": self.errors, "requests": self.requests}


def run_load(address: str, rpc: str, clients: int, seconds: float, users: list[str], k: int = 20) -> Load:
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + START_DELAY_S + clients * 0.05
    with context.Pool(clients) as pool:
        results = pool.starmap(_client, [(address, rpc, start_at, seconds, users, k, seed) for seed in range(clients)])
    latencies = np.concatenate([r[0] for r in results]) if results else np.empty(0)
    errors = sum(r[1] for r in results)
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1000).round(3) if len(latencies) else (0.0, 0.0, 0.0)
    return Load(float(p50), float(p95), float(p99), round(len(latencies) / seconds, 1), errors, len(latencies) + errors)


def _client(address: str, rpc: str, start_at: float, seconds: float, users: list[str], k: int,
            seed: int) -> tuple[np.ndarray, int]:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)
    if rpc == RECOMMEND:
        stub = pb_grpc.RecommenderStub(channel)
        order = np.random.default_rng(seed).permutation(len(users))
        requests = [pb.RecommendRequest(user_id=users[i], k=k) for i in order]
        call = stub.Recommend
    else:
        requests = [health_pb2.HealthCheckRequest()]
        call = health_pb2_grpc.HealthStub(channel).Check
    latencies, errors, n = [], 0, 0
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    while time.time() < end:
        request = requests[n % len(requests)]
        n += 1
        began = time.perf_counter()
        try:
            call(request, timeout=10)
            latencies.append(time.perf_counter() - began)
        except grpc.RpcError:
            errors += 1
    channel.close()
    return np.asarray(latencies), errors
