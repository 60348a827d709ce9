"""``kapparec bench``: the project's benchmarks, each printing its figures beside a same-run ceiling."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from kapparec import cliargs

# name -> (module, function, help); functions take keyword arguments and return a JSON-able dict.
BENCHMARKS = {
    "backfill": ("transforms.bench", "backfill_benchmark", "backfill events/s vs raw kafka-python consume rate"),
    "freshness": ("transforms.bench", "freshness_benchmark", "produce-to-readable latency of the continuous job"),
    "flink": ("transforms.flink_bench", "flink_benchmark",
              "backfill at parallelism 1 and 2 and freshness on a local Flink cluster vs the DirectRunner"),
    "index": ("training.bench", "index_benchmark", "ScaNN vs brute force: build time, queries/s, recall@10"),
    "serving": ("kapparec.serving_bench", "serving_benchmark", "Recommend latency and QPS at 1/8/32 clients vs an empty RPC"),
    "reads": ("featurestore.bench", "reads_benchmark", "feature reads (trending, similar, affinity) at two log lengths"),
}


def register(verbs) -> None:
    bench = verbs.add_parser("bench", help="run a benchmark on a private stack (prints figures beside a ceiling)")
    sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (_, _, summary) in BENCHMARKS.items():
        parser = sub.add_parser(name, help=summary)
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "backfill":
            parser.add_argument("--events", type=cliargs.positive_int, default=1_000_000)
            parser.add_argument("--dense-events", type=cliargs.positive_int, default=200_000,
                                help="events of the dense-session log measured beside it")
        if name == "freshness":
            parser.add_argument("--n", type=cliargs.positive_int, default=250, help="events to time (at least 200)")
            parser.add_argument("--load", type=cliargs.positive_int, default=2_000, metavar="EVENTS_PER_S",
                                help="background load while the second n events are timed")
        if name == "flink":
            parser.add_argument("--events", type=cliargs.positive_int, default=1_000_000, help="events backfilled")
            parser.add_argument("--n", type=cliargs.positive_int, default=250, help="events timed for freshness")
            parser.add_argument("--load", type=cliargs.positive_int, default=2_000, metavar="EVENTS_PER_S",
                                help="background load while the second n events are timed")
            parser.add_argument("--quick", action="store_true",
                                help="at most 100,000 events and 100 timed events: minutes, not a figure to quote")
        if name == "index":
            parser.add_argument("--sizes", default="100000,1000000", help="comma-separated catalog sizes")
        if name == "reads":
            parser.add_argument("--sizes", default="1000000,5000000", help="comma-separated log lengths (events)")
            parser.add_argument("--calls", type=cliargs.positive_int, default=1000, help="calls per read")
        if name == "serving":
            parser.add_argument("--items", type=cliargs.positive_int, default=100_000, help="catalog size")
            parser.add_argument("--users", type=cliargs.positive_int, default=10_000, help="distinct users requested")
            parser.add_argument("--seconds", type=cliargs.positive_float, default=30.0, help="per concurrency level")
            parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
        parser.set_defaults(run=run_benchmark)
    everything = sub.add_parser("all", help="every benchmark one after another: one report (JSON, Markdown, PNG plots)")
    everything.add_argument("--json", action="store_true",
                            help="print the report as one JSON object (report.json also holds every raw result)")
    everything.add_argument("--out", type=Path, help="report directory (default .run/bench/<UTC time>)")
    everything.add_argument("--quick", action="store_true",
                            help="small sizes, a few minutes: a smoke check whose full-size goals stay unjudged")
    everything.add_argument("--with-flink", action="store_true",
                            help="also `bench flink` (needs Flink: `kapparec infra up --with-flink` installs it)")
    everything.set_defaults(run=run_all_benchmarks)
    publish = sub.add_parser("publish", help="rewrite the README's Benchmarks section and docs/capacity.md from a report")
    publish.add_argument("report", type=Path, nargs="?", help="report directory (default: the newest under docs/reports)")
    publish.set_defaults(run=publish_report)


def _kwargs(args) -> dict:
    if args.benchmark == "backfill":
        return {"events": args.events, "dense_events": args.dense_events}
    if args.benchmark == "freshness":
        return {"n": args.n, "load_per_s": float(args.load)}
    if args.benchmark == "flink":
        return {"events": args.events, "n": args.n, "load_per_s": float(args.load), "quick": args.quick}
    if args.benchmark == "serving":
        return {"items": args.items, "users": args.users, "seconds": args.seconds,
                "clients": tuple(cliargs.positive_int(c) for c in args.clients.split(","))}
    sizes = tuple(cliargs.positive_int(s) for s in args.sizes.split(","))
    return {"sizes": sizes, **({"calls": args.calls} if args.benchmark == "reads" else {})}


def run_benchmark(args) -> int:
    module, function, _ = BENCHMARKS[args.benchmark]
    result = getattr(importlib.import_module(module), function)(**_kwargs(args))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


def run_all_benchmarks(args) -> int:
    from kapparec.bench_all import FLINK_STEP, STEPS, default_out, failures, run_all, write_progress, write_report
    from kapparec.bench_publish import figures_table

    out = args.out or default_out()
    report = run_all(quick=args.quick, steps=STEPS + ((FLINK_STEP,) if args.with_flink else ()),
                     after_each=write_progress(out))
    written = write_report(report, out)
    print(f"bench all: wrote {', '.join(path.name for path in written)} to {out}", file=sys.stderr)
    if args.json:
        print(json.dumps({key: value for key, value in report.items() if key != "results"}, sort_keys=True))
    else:
        print(figures_table(report))
    for name, error in failures(report).items():
        print(f"bench all: {name} failed: {error}", file=sys.stderr)
    return 1 if failures(report) else 0


def publish_report(args) -> int:
    from kapparec.bench_publish import latest_report, publish

    for path in publish(args.report or latest_report()):
        print(f"wrote {path}")
    return 0
