"""``kapparec experiments list`` (what the experiments file makes live) and ``report`` (what it did)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kapparec import cliargs, settings


def register(verbs) -> None:
    experiments = verbs.add_parser("experiments", help="A/B experiments: what is live and how each variant does")
    sub = experiments.add_subparsers(dest="experiments_verb", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the experiments of the file serving follows, with traffic shares")
    _add_file(listing)
    listing.set_defaults(run=run_list)

    report = sub.add_parser("report", help="CTR and conversion per variant with intervals, lift and p-values")
    _add_file(report)
    cliargs.add_redis(report)
    report.add_argument("--version", help="a feature version (default: the current one)")
    report.add_argument("--window-minutes", type=cliargs.positive_int, default=30,
                        help="an interaction without a request id is attributed to an impression at most this long before it")
    report.add_argument("--min-impressions", type=cliargs.positive_int, default=200,
                        help="below this, a variant is 'not enough data' (default 200)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw CTR per variant and day")
    report.set_defaults(run=run_report)


def _add_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiments", type=Path, metavar="FILE",
                        help="the experiments file (env KAPPAREC_EXPERIMENTS; default ./experiments.toml)")


def run_list(args: argparse.Namespace) -> int:
    from serving import experiments

    path = settings.experiments_file(args.experiments)
    live = experiments.load(path)
    if not live.experiment:
        print(f"no experiments ({path} {'is empty' if path.exists() else 'does not exist'})")
        return 0
    for experiment in live.experiment:
        print(f"{experiment.name}  salt={experiment.salt}  traffic={experiment.traffic:.0%}  control={experiment.control_variant}")
        for variant in experiment.variant:
            serves = ("popular items only" if variant.popularity_only
                      else f"model {variant.model_version or 'production'}")
            tuned = f", funnel {json.dumps(variant.funnel, sort_keys=True)}" if variant.funnel else ""
            print(f"  {variant.name:<16}{experiment.traffic * variant.share:>7.1%} of users  {serves}{tuned}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from serving import experiment_report

    report = experiment_report.report_from_store(cliargs.redis_url(args), args.version,
                                                 settings.experiments_file(args.experiments),
                                                 args.window_minutes, args.min_impressions)
    if args.plot:
        experiment_report.plot(report, args.plot)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else experiment_report.render(report))
    return 0
