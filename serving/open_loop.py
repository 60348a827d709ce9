"""Open-loop load for the serving benchmark: requests sent on a fixed schedule, whatever the server does.

A closed-loop client waits for each answer before it asks again, so a slow server slows its own
load and its queueing never shows. Here each generator process (asyncio over ``grpc.aio``, no
TensorFlow) sends its share of the rate at scheduled times, and every latency is measured from the
request's scheduled send time: time spent waiting in a queue, the server's or the generator's
own, is in the figure. How far the generator fell behind its schedule is reported beside it.

The schedule goes out over as many connections as the closed loop's 8 clients open: a served
port spreads connections, not requests, over its worker processes (SO_REUSEPORT), so one or two
connections could put the whole rate on one worker while the other idles, which no real
population of clients does.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving.loadgen import CONNECT_TIMEOUT_S, in_processes

# Generator processes: the rate is split between them, so one event loop's CPU does not cap the rate.
GENERATORS = 2
CONNECTIONS_PER_GENERATOR = 4
TIMEOUT_S = 10.0


def run_open_loop(address: str, rate_qps: float, seconds: float, users: list[str], k: int = 20) -> dict:
    """Recommend at ``rate_qps`` for ``seconds``: the rate achieved, p50/p99/p99.9 from the scheduled
    send times, errors, and the generators' largest lag behind their schedule."""
    finished = in_processes(_generate, [(address, rate_qps / GENERATORS, seconds, users, k, seed)
                                        for seed in range(GENERATORS)], seconds)
    latencies = np.concatenate([latency for latency, _, _ in finished]) * 1000
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9]).round(3) if len(latencies) else (0.0, 0.0, 0.0)
    return {"target_qps": round(rate_qps, 1), "rate_qps": round(len(latencies) / seconds, 1), "p50_ms": float(p50),
            "p99_ms": float(p99), "p999_ms": float(p999), "errors": sum(errors for _, errors, _ in finished),
            "max_send_lag_ms": round(max(lag for _, _, lag in finished) * 1000, 3)}


def _generate(address: str, rate_qps: float, seconds: float, users: list[str], k: int, seed: int, ready, results) -> None:
    results.put(asyncio.run(_schedule(address, rate_qps, seconds, users, k, seed, ready)))


async def _schedule(address: str, rate_qps: float, seconds: float, users: list[str], k: int, seed: int, ready):
    order = np.random.default_rng(seed).permutation(len(users))
    requests = [pb.RecommendRequest(user_id=users[i], k=k) for i in order]
    # A local subchannel pool each: channels to one address would otherwise share one connection.
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CONNECTIONS_PER_GENERATOR)]
    try:
        await asyncio.wait_for(asyncio.gather(*(channel.channel_ready() for channel in channels)), CONNECT_TIMEOUT_S)
        stubs = [pb_grpc.RecommenderStub(channel) for channel in channels]
        ready.wait(timeout=CONNECT_TIMEOUT_S)
        latencies, errors, lag = [], 0, 0.0
        start = time.perf_counter()

        async def call(stub: pb_grpc.RecommenderStub, request: pb.RecommendRequest, scheduled: float) -> None:
            nonlocal errors
            try:
                await stub.Recommend(request, timeout=TIMEOUT_S)
                latencies.append(time.perf_counter() - scheduled)
            except grpc.aio.AioRpcError:
                errors += 1

        calls = []
        for n in range(int(rate_qps * seconds)):
            scheduled = start + n / rate_qps
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            lag = max(lag, time.perf_counter() - scheduled)
            calls.append(asyncio.create_task(call(stubs[n % len(stubs)], requests[n % len(requests)], scheduled)))
        await asyncio.gather(*calls)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return np.asarray(latencies), errors, lag
