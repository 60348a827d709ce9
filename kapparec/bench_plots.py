"""The report's PNG plots, one function per plot, each drawn from the benchmarks' results.

A plot whose benchmark did not run (a pared-down report) is left out rather than drawn empty.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402


def serving_latency(results: dict, ax) -> None:
    """Latency percentiles per closed-loop client count, and per open-loop rate."""
    serving = results["serving"]
    closed = sorted(serving["clients"].items(), key=lambda item: int(item[0]))
    for q, marker in (("p50", "o"), ("p95", "s"), ("p99", "^")):
        ax.plot([f"{n} clients" for n, _ in closed], [row[f"{q}_ms"] for _, row in closed], marker=marker,
                label=f"closed loop {q}")
    opened = sorted(serving.get("open_loop", {}).items(), key=lambda item: int(item[0]))
    for q, marker in (("p50", "o"), ("p99", "^"), ("p999", "v")):
        ax.plot([f"open {row['rate_qps']:g}/s" for _, row in opened], [row[f"{q}_ms"] for _, row in opened],
                marker=marker, linestyle="--", label=f"open loop {q}")
    ax.set(ylabel="ms", yscale="log", title="Recommend latency per client count and open-loop rate")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize="small")


def throughput(results: dict, ax) -> None:
    """Each throughput beside its same-run ceiling, as a share of that ceiling."""
    bars = []
    if "backfill" in results:
        backfill = results["backfill"]
        bars += [("backfill", backfill)] + ([("backfill dense", backfill["dense"])] if "dense" in backfill else [])
        bars = [(label, row["events_per_s"], row["ceiling_events_per_s"]) for label, row in bars]
    if "serving" in results:
        serving = results["serving"]
        bars += [(f"serving {n} clients", row["qps"], serving["ceiling"][n]["qps"]) for n, row in serving["clients"].items()]
    labels = [label for label, _, _ in bars]
    ax.bar(labels, [100.0] * len(bars), color="lightgrey", label="same-run ceiling (100%)")
    ax.bar(labels, [100.0 * value / ceiling for _, value, ceiling in bars], label="measured")
    for position, (_, value, ceiling) in enumerate(bars):
        ax.annotate(f"{value:,.0f} / {ceiling:,.0f}", (position, 100.0 * value / ceiling), ha="center",
                    va="bottom", fontsize="small")
    ax.set(ylabel="% of the same-run ceiling", title="Throughput against its ceiling (events/s, QPS)")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize="small")


def freshness(results: dict, ax) -> None:
    """Produce-to-readable latency of every timed event, idle and under load, beside the bare consumer."""
    result = results["freshness"]
    for label, latencies in (("bare consumer (ceiling)", result["ceiling"]["latencies_ms"]),
                             ("stream job, idle", result["latencies_ms"]),
                             (f"stream job, {result['load']['events_per_s']:,} events/s", result["load"]["latencies_ms"])):
        ordered = sorted(latencies)
        ax.plot(ordered, [(rank + 1) / len(ordered) for rank in range(len(ordered))], label=label)
    ax.set(xlabel="ms from produce to readable", ylabel="share of events", xscale="log",
           title="Freshness distribution")
    ax.legend(fontsize="small")


def training_curve(results: dict, ax) -> None:
    curve = results["training"]["loss_curve"]
    ax.plot(range(1, len(curve) + 1), curve, marker="o")
    ax.set(xlabel="epoch", ylabel="training loss", title=f"Two-tower training curve "
           f"({results['training']['interactions']:,} interactions)")


def recall_by_model(results: dict, ax) -> None:
    evaluation = results["evaluation"]
    models = sorted(evaluation["models"].items(), key=lambda item: item[1]["recall@10"])
    ax.barh([name for name, _ in models], [metrics["recall@10"] for _, metrics in models])
    ax.set(xlabel="Recall@10", title=f"Recall@10 of every model and baseline ({evaluation['dataset']})")


def index_curve(results: dict, ax) -> None:
    """Recall against queries/s as more leaves are searched, serving's setting marked."""
    for items, row in results["index"]["sizes"].items():
        curve = row["recall_vs_qps"]
        line, = ax.plot([point["recall@10"] for point in curve], [point["qps"] for point in curve], marker=".",
                        label=f"{int(items):,} items")
        serving = [point for point in curve if point["serving"]]
        ax.scatter([p["recall@10"] for p in serving], [p["qps"] for p in serving], s=120, marker="*",
                   color=line.get_color(), zorder=3, label=f"serving's setting, {int(items):,} items")
        ax.axhline(row["brute_qps"], color=line.get_color(), linestyle=":", label=f"exact search, {int(items):,} items")
    ax.set(xlabel="recall@10 against exact search", ylabel="queries/s (one thread)", yscale="log",
           title="ScaNN recall against queries/s")
    ax.legend(fontsize="small")


# file name -> (the benchmark it needs, how it is drawn)
PLOTS: dict[str, tuple[str, Callable]] = {
    "serving_latency.png": ("serving", serving_latency),
    "throughput.png": ("backfill", throughput),
    "freshness.png": ("freshness", freshness),
    "training_curve.png": ("training", training_curve),
    "recall_by_model.png": ("evaluation", recall_by_model),
    "index_recall_vs_qps.png": ("index", index_curve),
}


def write_plots(results: dict, out: Path) -> list[Path]:
    written = []
    for name, (needs, draw) in PLOTS.items():
        if needs not in results:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        draw(results, ax)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written
