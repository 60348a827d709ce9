"""The report's figures: each benchmark's result turned into ``{name, value, unit, ceiling, goal, met}``.

Every goal is a threshold here, in code, and ``met`` is computed from the measured figure, so the
report judges itself. A goal stated for the full-size run (a 1M-event log, a 1M-item index,
ml-latest-small) is not judged on a ``--quick`` run's small sizes: its ``met`` is null there.
Goals that do not depend on size (no errors, idle freshness) are judged on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# Thresholds of the project's goals.
BACKFILL_SHARE_OF_CONSUME = 0.5
DENSE_BACKFILL_SHARE_OF_CONSUME = 0.3
FRESHNESS_IDLE_P95_MS = 500.0
FRESHNESS_LOADED_P95_MS = 1000.0
READ_GROWTH_LIMIT = 1.5  # a read's p50 at the longest log over its p50 at the shortest
WINDOWED_MEMORY_GROWTH_LIMIT = 1.25
SERVING_GOAL_CLIENTS = "8"
SERVING_P99_MS = 15.0
SERVING_SHARE_OF_EMPTY_RPC = 0.35
SERVING_CPU_OVER_EMPTY_RPC = 4.0  # a Recommend's server CPU over the empty RPC's, on the same server
SERVING_USER_TOWER_MS = 0.3
SERVING_OPEN_LOOP_SHARE = "50"  # percent of the closed loop's QPS where the open loop has a goal
SERVING_OPEN_LOOP_P99_MS = 10.0
SERVING_LIVE_P99_OVER_QUIET = 2.0
INDEX_RECALL = 0.95
INDEX_SPEEDUP = 10.0
MODEL_OVER_EASE = 1.1
FLINK_P2_OVER_P1 = 1.3  # the Flink backfill job at parallelism 2 over 1
QUALITY_DATASET = "ml-latest-small"

# Features whose state is bounded by a time window, not by users or items: their memory must not
# grow with the log's length.
WINDOWED_FEATURES = ("affinity", "popularity", "trending", "trending_rank", "shown", "responded", "session_items",
                     "expiry")
READS = ("trending_global", "trending_region", "similar", "category_affinity")


def figure(name: str, value: float, unit: str, ceiling: float | None = None, goal: str | None = None,
           holds: bool | None = None, full_size_only: bool = True, quick: bool = False) -> dict:
    """One row of the report; ``holds`` is whether the measured value meets ``goal``."""
    judged = goal is not None and holds is not None and not (quick and full_size_only)
    return {"name": name, "value": value, "unit": unit, "ceiling": ceiling, "goal": goal,
            "met": bool(holds) if judged else None}


def backfill_figures(result: dict, quick: bool) -> Iterator[dict]:
    for label, figures, share in (("backfill", result, BACKFILL_SHARE_OF_CONSUME),
                                  ("backfill dense", result.get("dense"), DENSE_BACKFILL_SHARE_OF_CONSUME)):
        if figures is None:
            continue
        rate, ceiling = figures["events_per_s"], figures["ceiling_events_per_s"]
        yield figure(f"{label}: {figures['events']:,} events", rate, "events/s", ceiling,
                     f">= {share:.0%} of the raw consume", rate >= share * ceiling, quick=quick)
        yield figure(f"{label}: peak RSS", figures["peak_rss_mb"], "MB")
        yield figure(f"{label}: Redis memory", figures["redis_used_memory_mb"], "MB")
        cpu = figures["cpu_us_per_event"]
        yield figure(f"{label}: CPU per event, backfill process", cpu["backfill_process"], "µs",
                     figures["ceiling_cpu_us_per_event"])
        yield figure(f"{label}: CPU per event, Redis", cpu["redis"], "µs")
        yield figure(f"{label}: CPU per event, broker", cpu["broker"], "µs")


def freshness_figures(result: dict, quick: bool) -> Iterator[dict]:
    ceiling, load = result["ceiling"], result["load"]
    for q in (50, 95, 99):
        goal = (f"<= {FRESHNESS_IDLE_P95_MS:.0f} ms", result["p95_ms"] <= FRESHNESS_IDLE_P95_MS) if q == 95 else (None, None)
        yield figure(f"freshness idle ({result['rate_per_s']:g} events/s): p{q}", result[f"p{q}_ms"], "ms",
                     ceiling[f"p{q}_ms"], *goal, full_size_only=False, quick=quick)
    for q in (50, 95, 99):
        goal = (f"<= {FRESHNESS_LOADED_P95_MS:.0f} ms", load["p95_ms"] <= FRESHNESS_LOADED_P95_MS) if q == 95 else (None, None)
        yield figure(f"freshness under {load['events_per_s']:,} events/s: p{q}", load[f"p{q}_ms"], "ms",
                     ceiling[f"p{q}_ms"], *goal, quick=quick)
    yield figure("freshness under load: lag, second half's max", load["lag_second_half_max"], "records", None,
                 "<= the first half's max (not growing)", load["lag_second_half_max"] <= load["lag_first_half_max"],
                 quick=quick)


def reads_figures(result: dict, quick: bool) -> Iterator[dict]:
    sizes = sorted(result["sizes"].values(), key=lambda entry: entry["events"])
    shortest, longest = sizes[0], sizes[-1]
    growth = len(sizes) > 1
    for entry in sizes:
        for read in READS:
            goal = (f"<= {READ_GROWTH_LIMIT}x its p50 at {shortest['events']:,} events",
                    entry[read]["p50_ms"] <= READ_GROWTH_LIMIT * shortest[read]["p50_ms"]) \
                if growth and entry is longest else (None, None)
            yield figure(f"read {read} at {entry['events']:,} events: p50", entry[read]["p50_ms"], "ms",
                         entry["ceiling_ping"]["p50_ms"], *goal, quick=quick)
        windowed = windowed_memory_mb(entry)
        goal = (f"<= {WINDOWED_MEMORY_GROWTH_LIMIT}x at {shortest['events']:,} events",
                windowed <= WINDOWED_MEMORY_GROWTH_LIMIT * windowed_memory_mb(shortest)) \
            if growth and entry is longest else (None, None)
        yield figure(f"Redis memory of windowed features at {entry['events']:,} events", windowed, "MB", None, *goal,
                     quick=quick)
        yield figure(f"Redis memory, all, at {entry['events']:,} events", entry["redis_used_memory_mb"], "MB")


def windowed_memory_mb(entry: dict) -> float:
    return round(sum(entry["features"].get(name, {"mb": 0.0})["mb"] for name in WINDOWED_FEATURES), 2)


def serving_figures(result: dict, quick: bool) -> Iterator[dict]:
    for clients, row in result["clients"].items():
        ceiling = result["ceiling"][clients]
        at_goal = clients == SERVING_GOAL_CLIENTS
        yield figure(f"serving {clients} clients: QPS", row["qps"], "QPS", ceiling["qps"],
                     *((f">= {SERVING_SHARE_OF_EMPTY_RPC:.0%} of the empty RPC",
                        row["qps"] >= SERVING_SHARE_OF_EMPTY_RPC * ceiling["qps"]) if at_goal else (None, None)),
                     quick=quick)
        yield figure(f"serving {clients} clients: p99", row["p99_ms"], "ms", ceiling["p99_ms"],
                     *((f"<= {SERVING_P99_MS:g} ms", row["p99_ms"] <= SERVING_P99_MS) if at_goal else (None, None)),
                     quick=quick)
        yield figure(f"serving {clients} clients: errors", row["errors"], "requests", None, "0", row["errors"] == 0,
                     full_size_only=False, quick=quick)
        yield figure(f"serving {clients} clients: server CPU per request", row["server_cpu_ms"], "ms",
                     ceiling["server_cpu_ms"],
                     *((f"<= {SERVING_CPU_OVER_EMPTY_RPC:g} x the empty RPC",
                        row["server_cpu_ms"] <= SERVING_CPU_OVER_EMPTY_RPC * ceiling["server_cpu_ms"])
                       if at_goal else (None, None)),
                     quick=quick)
        yield figure(f"serving {clients} clients: handler CPU per request", row["handler_cpu_ms"], "ms")
        if "redis_cpu_ms" in row:
            yield figure(f"serving {clients} clients: Redis CPU per request", row["redis_cpu_ms"], "ms")
    if "user_tower" in result.get("stage_cpu_ms", {}):  # absent when no request embedded a user
        tower = result["stage_cpu_ms"]["user_tower"]
        yield figure(f"serving {SERVING_GOAL_CLIENTS} clients: user tower CPU per request", tower, "ms", None,
                     f"<= {SERVING_USER_TOWER_MS:g} ms", tower <= SERVING_USER_TOWER_MS, quick=quick)
    for share, row in result.get("open_loop", {}).items():
        yield figure(f"serving open loop at {share}% ({row['target_qps']:g} QPS asked): p99", row["p99_ms"], "ms", None,
                     *((f"<= {SERVING_OPEN_LOOP_P99_MS:g} ms", row["p99_ms"] <= SERVING_OPEN_LOOP_P99_MS)
                       if share == SERVING_OPEN_LOOP_SHARE else (None, None)),
                     quick=quick)
    if "live_ingest" in result:
        live, quiet = result["live_ingest"], result["clients"][SERVING_GOAL_CLIENTS]
        yield figure(f"serving {SERVING_GOAL_CLIENTS} clients under {live['events_per_s']:,} events/s: QPS",
                     live["qps"], "QPS", quiet["qps"])
        yield figure(f"serving {SERVING_GOAL_CLIENTS} clients under {live['events_per_s']:,} events/s: p99",
                     live["p99_ms"], "ms", quiet["p99_ms"], f"<= {SERVING_LIVE_P99_OVER_QUIET:g} x the quiet p99",
                     live["p99_ms"] <= SERVING_LIVE_P99_OVER_QUIET * quiet["p99_ms"], quick=quick)
    if "in_process" in result:
        alone, empty = result["in_process"], result["ceiling"].get(SERVING_GOAL_CLIENTS, {}).get("server_cpu_ms")
        # Beside the empty RPC's server CPU: the handler alone, before any of gRPC's own.
        for page, key in (("computed", "first_cpu_ms"), ("cached", "again_cpu_ms")):
            yield figure(f"serving: Recommend handler alone in process, page {page}: CPU", alone[key], "ms", empty)


def index_figures(result: dict, quick: bool) -> Iterator[dict]:
    for items, row in result["sizes"].items():
        label = f"ScaNN {int(items):,} x {result['dim']}-d"
        yield figure(f"{label}: queries/s (1 thread)", row["scann_qps"], "QPS", row["brute_qps"],
                     f">= {INDEX_SPEEDUP:g}x exact search", row["speedup"] >= INDEX_SPEEDUP, quick=quick)
        yield figure(f"{label}: recall@10", row["recall@10"], "", 1.0, f">= {INDEX_RECALL}",
                     row["recall@10"] >= INDEX_RECALL, quick=quick)
        yield figure(f"{label}: build", row["build_s"], "s")


def training_figures(result: dict, quick: bool) -> Iterator[dict]:
    yield figure(f"two-tower, {result['interactions']:,} interactions: per epoch", result["seconds_per_epoch"], "s",
                 result["logits_only_s"])


def evaluation_figures(result: dict, quick: bool) -> Iterator[dict]:
    models = result["models"]
    ease = models["ease"]["recall@10"]
    judged = result["dataset"] == QUALITY_DATASET
    for name, metrics in models.items():
        goal = (f">= {MODEL_OVER_EASE}x EASE", metrics["recall@10"] >= MODEL_OVER_EASE * ease) \
            if name in ("two_tower", "funnel") and judged else (None, None)
        yield figure(f"Recall@10 {name} ({result['dataset']})", metrics["recall@10"], "", None, *goal, quick=quick)


def flink_figures(result: dict, quick: bool) -> Iterator[dict]:
    for runner, row in result["backfill"].items():
        yield figure(f"backfill on {runner}, {result['events']:,} events", row["events_per_s"], "events/s",
                     result["ceiling_events_per_s"])
        yield figure(f"backfill on {runner}: CPU per event, every process while committing",
                     cpu_us_per_event(row, result["events"]), "µs")
        # Redis's one thread is the ceiling of the merge: every subtask's commits run there in turn.
        yield figure(f"backfill on {runner}: Redis's thread in the merge", row["committing"]["merge_script_cores"],
                     "cores", 1.0)
        yield figure(f"backfill on {runner}: Redis's merge per event", row["committing"]["merge_script_us_per_event"],
                     "µs")
    replayed = result["continuous"]["direct_backfill"]
    differing = replayed["only_followed"] + replayed["only_replayed"]
    yield figure(f"Flink jobs' store of {replayed['keys']:,} keys: dump lines differing from a DirectRunner backfill's",
                 differing, "lines", None, "0", replayed["equal"], full_size_only=False, quick=quick)
    p2_over_p1 = result["p2_over_p1_job"]
    yield figure("backfill on Flink: parallelism 2 over 1 (the jobs)", p2_over_p1, "x", None,
                 f">= {FLINK_P2_OVER_P1}", p2_over_p1 >= FLINK_P2_OVER_P1, quick=quick)
    for runner, row in result["freshness"].items():
        yield figure(f"freshness idle on {runner}: p95", row["p95_ms"], "ms", None, f"<= {FRESHNESS_IDLE_P95_MS:.0f} ms",
                     row["p95_ms"] <= FRESHNESS_IDLE_P95_MS, full_size_only=False, quick=quick)


def cpu_us_per_event(backfill: dict, events: int, leave_out: tuple[str, ...] = ()) -> float:
    """CPU µs per event of a ``bench flink`` backfill's process groups while it committed: the
    command around that adds the JVMs' and the SDK workers' start-up, which a continuous job pays once."""
    committing = backfill["committing"]
    used = sum(share for group, share in committing["cpu_cores"].items() if group not in leave_out)
    return round(1e6 * used * committing["seconds"] / events, 2)


FIGURES: dict[str, Callable[[dict, bool], Iterator[dict]]] = {
    "backfill": backfill_figures, "freshness": freshness_figures, "reads": reads_figures,
    "serving": serving_figures, "index": index_figures, "training": training_figures,
    "evaluation": evaluation_figures, "flink": flink_figures,
}


def report_figures(results: dict[str, dict], quick: bool) -> list[dict]:
    """Every figure of every benchmark that ran, in the order they ran."""
    return [row for name, result in results.items() for row in FIGURES[name](result, quick)]
