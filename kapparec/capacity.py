"""``docs/capacity.md``: the seeds' scale on paper, computed from a benchmark report's measured figures.

Every number in the model is either a measured per-event, per-request or per-entity figure of the
report, or one of the stated assumptions below; the document is regenerated with the report
(``kapparec bench publish``), so it never drifts from what was measured.
"""

from __future__ import annotations

import math
from pathlib import Path

from kapparec.bench_figures import cpu_us_per_event

# The seeds' scale.
USERS, ITEMS, RECOMMEND_QPS, EVENTS_PER_DAY = 200_000_000, 10_000_000, 100_000, 1_600_000_000
# Assumptions, stated in the document.
PEAK_TO_MEAN = 3.0  # the busiest hour's event rate over the day's mean
CORE_UTILISATION = 0.7  # the share of a core planned busy, leaving headroom for bursts and failover
REDIS_NODE_GIB = 25.0  # usable memory of one Redis Cluster primary
REDIS_REPLICAS = 1  # one replica per primary
KAFKA_PARTITIONS = 256
MACHINE_CORES = 2  # a machine like this project's

USER_FEATURES = ("history", "seen", "disliked", "progress", "profile", "affinity", "session_items", "shown",
                 "responded")
ITEM_FEATURES = ("popularity", "catalog", "cooc", "occ")


def job_us_per_event(results: dict) -> tuple[str, float]:
    """(which runner, the stream job's CPU µs per event): Flink at parallelism 2 when the report ran
    ``bench flink``, every process counted while the job committed (JVMs, SDK workers; their
    start-up, which a continuous job pays once, left out), Redis and the broker left out as they are
    counted apart; the DirectRunner's backfill process otherwise."""
    if "flink" in results:
        flink = results["flink"]
        return ("Flink, parallelism 2 (`bench flink`, every process while the job committed)",
                cpu_us_per_event(flink["backfill"]["flink_p2"], flink["events"], leave_out=("redis", "broker")))
    return "DirectRunner (the backfill process)", results["backfill"]["cpu_us_per_event"]["backfill_process"]


def bytes_per_entity(reads_entry: dict, features: tuple[str, ...], entities: int) -> float:
    measured = reads_entry["features"]
    return sum(measured.get(name, {"mb": 0.0})["mb"] for name in features) * 2**20 / entities


def capacity_model(report: dict) -> dict:
    results = report["results"]
    backfill, serving = results["backfill"], results["serving"]
    peak_events_per_s = EVENTS_PER_DAY / 86_400 * PEAK_TO_MEAN
    cpu = backfill["cpu_us_per_event"] | {"backfill_process": job_us_per_event(results)[1]}
    at_goal = serving_row(serving)
    level = next(n for n, row in serving["clients"].items() if row is at_goal)
    redis_cores = peak_events_per_s * cpu["redis"] / 1e6
    model = {
        "peak_events_per_s": peak_events_per_s,
        "job_cores": peak_events_per_s * cpu["backfill_process"] / 1e6 / CORE_UTILISATION,
        "broker_cores": peak_events_per_s * cpu["broker"] / 1e6 / CORE_UTILISATION,
        "redis_write_cores": redis_cores / CORE_UTILISATION,
        "serving_cores": RECOMMEND_QPS * at_goal["server_cpu_ms"] / 1000 / CORE_UTILISATION,
        "grpc_floor_cores": RECOMMEND_QPS * serving["ceiling"][level]["server_cpu_ms"] / 1000 / CORE_UTILISATION,
        "primaries_for_writes": math.ceil(redis_cores / CORE_UTILISATION),
    }
    return model | memory_model(results)


def longest_reads(results: dict) -> dict | None:
    """The feature-reads benchmark's longest log, whose store the memory is measured on (None: not run)."""
    if "reads" not in results:
        return None
    return max(results["reads"]["sizes"].values(), key=lambda entry: entry["events"])


def memory_model(results: dict) -> dict:
    reads = longest_reads(results)
    if reads is None:
        return {}
    per_user = bytes_per_entity(reads, USER_FEATURES, reads["users"])
    per_item = bytes_per_entity(reads, ITEM_FEATURES, reads["items"])
    memory_gib = (USERS * per_user + ITEMS * per_item) / 2**30
    return {"bytes_per_user": per_user, "bytes_per_item": per_item, "redis_memory_gib": memory_gib,
            "primaries_for_memory": math.ceil(memory_gib / REDIS_NODE_GIB)}


def single_unit_limits(m: dict) -> dict[str, tuple[float, str]]:
    """Per single unit: the share of the target's load it carries before it saturates, and how it
    scales out (or what it needs before it can)."""
    return {
        "one stream process": (1 / m["job_cores"],
                               "not today: one writer lease per store; needs a lease per partition"),
        "one Redis primary's CPU, taking the writes": (1 / (m["redis_write_cores"] or 1e-9),
                                                       "not today: needs Redis Cluster, keys declared and tagged"),
        f"one serving machine ({MACHINE_CORES} cores)": (MACHINE_CORES / m["serving_cores"],
                                                         "yes: stateless processes behind a load balancer"),
    }


def all_limits(m: dict) -> dict[str, tuple[float, str]]:
    """``single_unit_limits`` and, when the report measured the store's memory, one node's memory."""
    if "redis_memory_gib" not in m:
        return single_unit_limits(m)
    return single_unit_limits(m) | {
        f"one Redis node's memory ({REDIS_NODE_GIB:g} GiB)": (REDIS_NODE_GIB / m["redis_memory_gib"],
                                                            "not today: needs Redis Cluster, keys declared and tagged")}


def limits_table(m: dict) -> str:
    rows = sorted(all_limits(m).items(), key=lambda item: item[1][0])
    return "\n".join(["| unit | share of the target it carries | scales out |", "|---|---|---|",
                      *(f"| {unit} | {share:.3%} | {how} |" for unit, (share, how) in rows)])


def breaks_first(m: dict) -> str:
    """The unit that saturates first among those that cannot scale out today."""
    stuck = {unit: share for unit, (share, how) in all_limits(m).items() if how.startswith("not today")}
    return min(stuck, key=stuck.get)


def runner_note(results: dict) -> str:
    if "flink" in results:
        return ("The pipeline's figure is Flink's, from `kapparec bench flink` in this report: a local cluster at "
                "parallelism 2 on this machine, with its JVMs, job server and SDK workers counted. Redis's and the "
                "broker's are the DirectRunner backfill's, the same merge and the same reads.")
    return ("These are **DirectRunner** figures: this report did not run `kapparec bench flink` (`bench all "
            "--with-flink`), so it holds no Flink per-core figure. The DirectRunner runs a bundle on one Python "
            "thread, so its CPU per event is the per-core cost of the same transforms; Flink adds its shuffle and "
            "checkpointing and spreads the SDK workers over cores.")


def redis_reads(report: dict) -> str:
    """What the request path costs Redis, when the report measured it (``INFO cpu`` per Recommend)."""
    row = serving_row(report["results"]["serving"])
    if "redis_cpu_ms" not in row:
        return ("Redis's CPU per request is not in this report (a request makes at most two round trips, two "
                "scripts); it has to be measured before the read replicas are sized.")
    cores = RECOMMEND_QPS * row["redis_cpu_ms"] / 1000 / CORE_UTILISATION
    return (f"Redis spent {row['redis_cpu_ms']} ms of CPU per Recommend (`INFO cpu`, the snapshot's background "
            f"reads included): **{cores:,.0f} Redis cores** for reads, {math.ceil(cores):,} single-threaded "
            "replicas at least, beside the primaries that take the writes.")


def serving_row(serving: dict) -> dict:
    """The closed-loop level the goals are stated at (8 clients), else the busiest measured."""
    return serving["clients"].get("8") or serving["clients"][max(serving["clients"], key=int)]


def memory_section(report: dict, m: dict) -> str:
    reads = longest_reads(report["results"])
    writes = f"The writes need {m['primaries_for_writes']:,} primaries' CPU at {CORE_UTILISATION:.0%} each."
    if reads is None:
        return ("Not measured in this report: its run stopped before the feature-reads benchmark, which measures "
                f"the store's memory per feature. {writes}")
    return f"""Measured with `MEMORY USAGE` over every key of the store after a backfill of {reads['events']:,}
events by {reads['users']:,} users over {reads['items']:,} items ({reads['days']} days):

| entity | features | bytes each |
|---|---|---|
| user | {', '.join(USER_FEATURES)} | {m['bytes_per_user']:,.0f} |
| item | {', '.join(ITEM_FEATURES)} | {m['bytes_per_item']:,.0f} |

So {USERS:,} users and {ITEMS:,} items need **{m['redis_memory_gib']:,.0f} GiB**
({m['primaries_for_memory']:,} primaries of {REDIS_NODE_GIB:g} GiB, twice that with replicas). The
per-user figure is bounded (history 50, seen items 2,000, windowed features expire in log time), but
this log's users have {reads['events'] / reads['users']:,.0f} events each; a heavier user fills more
of those bounds. Co-occurrence per item is bounded by the catalog, not by a constant, and grows with
it. {writes}"""


def capacity_markdown(report: dict, report_path: Path) -> str:
    m = capacity_model(report)
    backfill = report["results"]["backfill"]
    runner, job_us = job_us_per_event(report["results"])
    cpu = backfill["cpu_us_per_event"] | {"backfill_process": job_us}
    first = "memory" if m.get("primaries_for_memory", 0) >= m["primaries_for_writes"] else "write CPU"
    primaries = max(m.get("primaries_for_memory", 0), m["primaries_for_writes"])
    quick = " It is a `--quick` report: small logs, so the per-entity memory is far from what a user with a long history holds." \
        if report["quick"] else ""
    return f"""# Capacity at the seeds' scale, on paper

Generated by `kapparec bench publish` from [{report_path}/report.json]({report_path}/report.json)
(measured {report['started_at']} on a {report['machine']['cores']}-core machine, load average
{report['load_average']['start'][0]} at the start and {report['load_average']['end'][0]} at the end).{quick}
Do not edit: rerun `kapparec bench all --out docs/reports/<date>` and `kapparec bench publish`.

The target: {USERS:,} users, {ITEMS:,} items, {RECOMMEND_QPS:,} Recommend calls per second,
{EVENTS_PER_DAY:,} events a day.

Assumptions (the only numbers here that were not measured): the busiest hour carries
{PEAK_TO_MEAN:g}x the day's mean event rate; a core is planned {CORE_UTILISATION:.0%} busy; a Redis
Cluster primary holds {REDIS_NODE_GIB:g} GiB, with {REDIS_REPLICAS} replica each; the `events` topic
has {KAFKA_PARTITIONS} partitions.

## The stream job

{EVENTS_PER_DAY:,} events a day is {EVENTS_PER_DAY / 86_400:,.0f} events/s on average and
**{m['peak_events_per_s']:,.0f} events/s** at peak.

| per event (measured by a backfill) | CPU | cores at peak, {CORE_UTILISATION:.0%} busy |
|---|---|---|
| the pipeline on {runner} (read, parse, ten features, the commit's encoding) | {cpu['backfill_process']:.1f} µs | {m['job_cores']:,.1f} |
| Redis (the merge script) | {cpu['redis']:.1f} µs | {m['redis_write_cores']:,.1f} |
| the broker | {cpu['broker']:.1f} µs | {m['broker_cores']:,.1f} |

{runner_note(report["results"])}
The job's cores scale with partitions: each partition is read in order by one worker, so
{KAFKA_PARTITIONS} partitions allow up to {KAFKA_PARTITIONS} workers.

## Serving

A Recommend cost the server {serving_row(report['results']['serving'])['server_cpu_ms']} ms
of CPU at 8 clients (every process of the server, from `/proc`), against the empty RPC's
{m['grpc_floor_cores'] * CORE_UTILISATION / RECOMMEND_QPS * 1000:.2f} ms on the same server: **{m['serving_cores']:,.0f} cores**
for {RECOMMEND_QPS:,} QPS ({m['grpc_floor_cores']:,.0f} of them would be gRPC's floor alone). Serving
is stateless apart from its snapshot and caches, so it scales by processes; each process holds the
catalog and the ScaNN index ({ITEMS:,} items x 64-d floats is {ITEMS * 64 * 4 / 2**30:.1f} GiB before
quantisation). {redis_reads(report)}

## Redis memory

{memory_section(report, m)}

## Sharding the store across Redis Cluster with the per-bundle atomic commit

Today a commit is one Lua script (`featurestore/merge.lua`) that builds each key's name inside the
script from the version and the bundle's groups. Redis Cluster refuses that: a script must declare
every key it touches in `KEYS`, and all of them must hash to one slot. The design that keeps one
atomic commit per bundle:

- **One hash tag per Kafka partition.** Every key a bundle of partition *p* writes carries `{{p17}}`
  (for *p* = 17): `kr:<v>:{{p17}}:history:<user>`, and the partition's committed offset
  `kr:<v>:{{p17}}:offsets` beside them. A bundle covers one partition, so its keys, its offset and
  its dead-letter mark share a slot, and the script commits them together or not at all, as now.
- **Keys declared, not built.** The client computes every key name (it already groups the merge by
  target key) and passes them as `KEYS`; the script reads names only from `KEYS`. `layout.py`
  stays the one place that spells them.
- **User features** are keyed by user, and `events` is keyed by `user_id`, so a user's keys live
  in one partition's slot: a user read is one slot, one round trip.
- **Item and trending features** receive mutations from every partition. Under a partition tag they
  become {KAFKA_PARTITIONS} partial aggregates per item (counts, top-N, distinct-user rankings merge
  associatively, which is why this is exact). Reads then fan out to every partition: a
  `SimilarItems` or trending read becomes {KAFKA_PARTITIONS} reads. The way out is a second stage
  keyed by item (a Flink shuffle by `item_id`, with its own offsets per item partition): it commits
  item keys tagged by *item* partition, atomically with that stage's offsets.
- **Versions.** `kr:current` is a pointer every reader follows; in a cluster it lives in one slot
  and names the version, and a switch writes only that key (every shard's data for the version is
  complete before the switch, as in a backfill today).

## What breaks first

Growing from one machine towards the target, each single unit below saturates at a share of the
target's load; the smallest share breaks first (this report's figures, at {CORE_UTILISATION:.0%} busy):

{limits_table(m)}

Of the units that cannot scale out today, **{breaks_first(m)}** breaks first. At the full scale
Redis needs {primaries:,} primaries, set by **{first}**; serving needs
{m['serving_cores']:,.0f} cores and the stream job {m['job_cores']:,.0f}. The single writer lease
(`kr:lock:stream`: one continuous job per store) has to become one lease per partition, and the
merge script's keys declared and tagged as above. Once sharded, what breaks next is the item side of
the store: partition-tagged item and trending keys make those reads fan out to every partition, and
at {RECOMMEND_QPS:,} QPS, with co-occurrence read for each request's recent items, that multiplies
Redis calls by the partition count, until the item-keyed second stage exists.
"""
