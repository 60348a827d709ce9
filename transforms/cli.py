"""``kapparec backfill`` and ``kapparec stream``: the feature jobs over the log."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from kapparec import cliargs
from kapparec.errors import Interrupted
from transforms.commit_caps import STREAM_MAX_KEYS


def _add_runner_flags(parser: argparse.ArgumentParser) -> None:
    cliargs.add_bootstrap(parser)
    cliargs.add_redis(parser)
    parser.add_argument("--runner", choices=("DirectRunner", "FlinkRunner", "PortableRunner"), default="DirectRunner")
    parser.add_argument("--flink-master", metavar="HOST:PORT",
                        help="Flink REST endpoint of another cluster (default: the one `infra up --with-flink` started)")
    parser.add_argument(
        "--flink-job-server-jar", metavar="PATH",
        help="Beam's Flink job-server jar (default: the one `infra up --with-flink` resolved with mvn)",
    )
    parser.add_argument(
        "--accept-log-retention", action="store_true",
        help="run even though a topic of the log deletes history (retention), so a replay sees less than the stream did",
    )
    parser.add_argument(
        "--allowed-lateness-hours", type=float, metavar="H",
        help="records later than this behind their partition's event-time high water are counted as late",
    )


def register(verbs) -> None:
    backfill = verbs.add_parser(
        "backfill",
        help="replay the log into a new feature version, then switch readers to it",
        description="Replay [earliest, end snapshot) of the log through the feature pipeline into a new "
        "version and publish it atomically. Unknown --options pass through to Beam.",
    )
    _add_runner_flags(backfill)
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar")
    backfill.set_defaults(run=run_backfill, passthrough=True)

    stream = verbs.add_parser(
        "stream",
        help="keep features fresh as events arrive (resumes where it stopped)",
        description="One long-lived Beam pipeline follows the log; each bundle's features commit "
                    "with the offsets they cover in one Redis transaction.",
    )
    _add_runner_flags(stream)
    stream.add_argument("--once", action="store_true", help="process up to the end offsets seen at start, then exit")
    stream.add_argument("--wait", action="store_true",
                        help="if another stream job holds the store's writer lease, wait for it instead of exiting")
    stream.add_argument("--lease-seconds", type=cliargs.positive_float, default=10.0, metavar="S",
                        help="the writer lease's term: a job that stops renewing it (killed, paused) loses it "
                             "after this long (default 10)")
    stream.add_argument("--job-lifetime", type=cliargs.positive_float, default=None, metavar="S",
                        help="end each run of the job once it has read for this long and submit it again from "
                             "the committed offsets (docs/flink.md; default: never)")
    stream.add_argument("--poll-interval", type=float, default=0.2, metavar="S",
                        help="seconds between checks for a stop request and reports of commits")
    stream.add_argument(
        "--max-batch-records", type=cliargs.positive_int, default=None, metavar="N",
        help="records per commit at most (default: bounded by the merged state's size only)",
    )
    stream.add_argument(
        "--max-commit-keys", type=cliargs.positive_int, default=STREAM_MAX_KEYS, metavar="N",
        help=f"merged fields per commit at most: a commit holds Redis while serving reads it (default {STREAM_MAX_KEYS:,})",
    )
    stream.set_defaults(run=run_stream, passthrough=True)


def _job_settings(args, follow: bool):
    from transforms.config import FeatureConfig
    from transforms.flink_options import has_flag
    from transforms.jobs import RunnerSettings

    cliargs.require(args.runner != "PortableRunner" or has_flag(args.beam_args, "--job_endpoint"),
                    "--runner PortableRunner needs --job_endpoint HOST:PORT")
    overrides = {}
    if args.allowed_lateness_hours is not None:
        overrides["allowed_lateness_ms"] = int(args.allowed_lateness_hours * 3_600_000)
    config = FeatureConfig(**overrides)
    jar = args.flink_job_server_jar
    cliargs.require(jar is None or Path(jar).is_file(), f"--flink-job-server-jar: no file at {jar}")
    runner = RunnerSettings(args.runner, args.flink_master, tuple(args.beam_args), jar)
    runner.options(follow)  # a runner that cannot run (no Flink cluster to run on) is refused before any work
    return config, runner


def run_backfill(args) -> int:
    from transforms.jobs import backfill

    config, runner = _job_settings(args, follow=False)
    _on_signals(_interrupt("interrupted: the version it was building stays unpublished (readers keep the current one) "
                           "until `kapparec features gc` drops it"))
    version, stats = backfill(cliargs.bootstrap(args), cliargs.redis_url(args), config, runner,
                              progress=not args.no_progress and sys.stderr.isatty(),
                              accept_log_retention=args.accept_log_retention)
    print(
        f"backfill: {stats.records} records into feature version {version} in {stats.seconds:.1f}s "
        f"({stats.records_per_s:,.0f} records/s); dead-lettered {stats.metrics.get('dead_lettered', 0)}, "
        f"late {stats.metrics.get('late_records', 0)}; now current"
    )
    return 0


def _on_signals(handler) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _interrupt(message: str):
    """A signal handler that ends a bounded run where it is: such a run polls for no stop request."""
    def interrupt(*_) -> None:
        raise Interrupted(message)
    return interrupt


def run_stream(args) -> int:
    from transforms.jobs import stream

    config, runner = _job_settings(args, follow=not args.once)
    # SIGTERM and Ctrl-C end the job at a commit boundary and hand the writer lease back at once:
    # a followed read ends at its next round; a bounded one (--once) polls for no stop, so the
    # signal interrupts it where it is, which is a commit boundary too (a commit is whole or absent).
    stop = threading.Event()
    if args.once:
        _on_signals(_interrupt("interrupted: the store holds every commit made so far; run it again to go on from there"))
    else:
        _on_signals(lambda *_: stop.set())

    def report(version, records):
        print(f"stream: {version} +{records} events committed", flush=True)

    total = stream(
        cliargs.bootstrap(args), cliargs.redis_url(args), config, runner,
        once=args.once, poll_interval_s=args.poll_interval, max_batch_records=args.max_batch_records,
        max_commit_keys=args.max_commit_keys,
        stop=stop, on_commit=report, wait=args.wait, lease_ttl_s=args.lease_seconds,
        accept_log_retention=args.accept_log_retention, job_lifetime_s=args.job_lifetime,
    )
    print(f"stream: {total.batches} commits, {total.records} records in {total.seconds:.1f}s")
    return 0
