"""``kapparec produce synthetic`` and ``kapparec import movielens``: filling the log."""

from __future__ import annotations

import argparse
import time

from kapparec import cliargs, settings


def register(subparsers) -> None:
    produce = subparsers.add_parser("produce", help="write generated events to the log")
    sources = produce.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(produce))
    sources.required = True
    synthetic = sources.add_parser("synthetic", help="a deterministic synthetic log with planted structure")
    synthetic.add_argument("--users", type=cliargs.positive_int, default=1000)
    synthetic.add_argument("--items", type=cliargs.positive_int, default=500)
    synthetic.add_argument("--events", type=cliargs.non_negative_int, default=100_000)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--malformed-share", type=float, default=0.0, help="share of invalid records (0..1)")
    synthetic.add_argument("--bots", type=float, default=0.0, metavar="SHARE",
                           help="add a bot burst of SHARE x events: 3 accounts playing 2 items within one hour")
    synthetic.add_argument("--start-ms", type=cliargs.non_negative_int, default=None, metavar="MS",
                           help="pin the log's start (epoch ms) for a reproducible log; default: the log ends now")
    synthetic.add_argument("--partitions", type=cliargs.positive_int, default=None, help="partitions of newly created topics")
    cliargs.add_bootstrap(synthetic)
    synthetic.set_defaults(run=produce_synthetic)

    importer = subparsers.add_parser("import", help="import a public data set into the log")
    datasets = importer.add_subparsers(dest="dataset", metavar="DATASET", parser_class=type(importer))
    datasets.required = True
    movielens = datasets.add_parser("movielens", help="an ml-latest-small or ml-100k folder")
    movielens.add_argument("path")
    movielens.add_argument("--partitions", type=cliargs.positive_int, default=None, help="partitions of newly created topics")
    cliargs.add_bootstrap(movielens)
    movielens.set_defaults(run=import_movielens)


def produce_synthetic(args: argparse.Namespace) -> None:
    from streams.producer import LogProducer
    from streams.synthetic import SyntheticLog, send_synthetic
    from streams.topics import ensure_topics

    shape = dict(users=args.users, items=args.items, events=args.events, seed=args.seed,
                 malformed_share=args.malformed_share, bots=args.bots)
    if args.start_ms is None:
        log = SyntheticLog.ending_at(int(time.time() * 1000), **shape)
    else:
        log = SyntheticLog(start_ms=args.start_ms, **shape)
    bootstrap = settings.bootstrap(args.bootstrap)
    ensure_topics(bootstrap, args.partitions)
    started = time.perf_counter()
    total = args.items + args.events + log.bot_events
    with LogProducer(bootstrap, progress=True, total=total, description="producing") as producer:
        send_synthetic(log, producer)
    bots = f", {log.bot_events} from bots" if log.bot_events else ""
    _summary(f"{args.items} catalog + {args.events + log.bot_events} interaction records "
             f"({log.malformed_count} malformed{bots})", total, started)
    from kapparec.timeunits import utc_text

    print(f"the log spans {utc_text(log.start_ms)} to {utc_text(log.last_log_time_ms)} (--start-ms {log.start_ms} reproduces it)")


def import_movielens(args: argparse.Namespace) -> None:
    from streams.movielens import read_movielens, send_movielens
    from streams.producer import LogProducer
    from streams.topics import ensure_topics

    started = time.perf_counter()
    catalog, ratings = read_movielens(args.path)  # a bad folder fails before touching the log
    bootstrap = settings.bootstrap(args.bootstrap)
    ensure_topics(bootstrap, args.partitions)
    with LogProducer(bootstrap, progress=True, description="importing") as producer:
        sent_catalog, sent_ratings = send_movielens(catalog, ratings, producer)
    _summary(f"{sent_catalog} catalog + {sent_ratings} rating records", sent_catalog + sent_ratings, started)


def _summary(what: str, records: int, started: float) -> None:
    seconds = time.perf_counter() - started
    print(f"produced {what} in {seconds:.1f} s ({records / max(seconds, 1e-9):,.0f} records/s)")
