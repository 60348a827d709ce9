"""A server's Prometheus metrics read as a client would: the benchmarks and the web console.

Latency quantiles come from the ``kapparec_rpc_seconds`` histogram the way Prometheus's
``histogram_quantile`` computes them (linear within the bucket that holds the rank), over the
difference of two scrapes, so a figure describes the interval between them and not the whole
life of the server.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RPC_HISTOGRAM = "kapparec_rpc_seconds"


def scrape(url: str, timeout_s: float = 5.0) -> list:
    """The metric families the endpoint at ``url`` exposes now."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return list(text_string_to_metric_families(response.read().decode()))


@dataclass(frozen=True)
class LatencyWindow:
    """The requests of an interval: cumulative counts per upper bound, ascending, and the
    interval's length (None when it runs from the server's start, whose time is unknown)."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    seconds: float | None

    @property
    def per_second(self) -> float | None:
        return self.count / self.seconds if self.seconds else None

    def quantile(self, q: float) -> float | None:
        """Seconds below which a share ``q`` of the requests finished (None without requests)."""
        if not self.count:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower  # beyond the last finite bound: that bound is all that is known
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass(frozen=True)
class RpcCounts:
    """One RPC's latency histogram at one scrape."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    at_s: float  # monotonic time of the scrape

    def since(self, earlier: "RpcCounts | None") -> LatencyWindow:
        """The requests between ``earlier`` and this scrape (all of them without an earlier one)."""
        if earlier is None or earlier.count > self.count:  # a restarted server counts from 0 again
            return LatencyWindow(self.buckets, self.count, None)
        before = dict(earlier.buckets)
        return LatencyWindow(tuple((bound, n - before.get(bound, 0.0)) for bound, n in self.buckets),
                             self.count - earlier.count, self.at_s - earlier.at_s)


def rpc_counts(families: list, rpc: str) -> RpcCounts:
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in families:
        if family.name != RPC_HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.labels.get("rpc") != rpc:
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
    return RpcCounts(tuple(sorted(buckets)), count, time.monotonic())
