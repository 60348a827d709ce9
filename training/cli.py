"""``kapparec train`` (replay -> fit -> evaluate -> register -> gate) and ``kapparec eval`` (all models, one split).

Handlers import Beam and TensorFlow when they run, so ``kapparec --help`` stays fast.
Progress bars go to stderr; stdout carries only the result (``eval --json`` prints one JSON object).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from kapparec import cliargs, settings
from kapparec.errors import UsageError

if TYPE_CHECKING:
    from training.data import Catalog, Interactions
    from training.recommender import Recommender
    from training.split import Split
    from training.two_tower.train import TwoTowerParams, TwoTowerRecommender

TWO_TOWER = "two_tower"
MODEL_NAMES = ("popularity", "item_knn", "ease", TWO_TOWER)
DEFAULT_MARGIN = 0.02
SCANN_QUERY_USERS = 500


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the two-tower on a replay of the log, register it, gate it")
    add_log_arguments(train)
    add_training_arguments(train)
    train.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                       help="promote unless recall@10 is worse than production's by more than this share (default 0.02)")
    train.add_argument("--models-dir", type=Path, help="model registry (default: KAPPAREC_MODELS_DIR or ./models)")
    train.set_defaults(run=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate baselines and the two-tower on one split")
    evaluate.add_argument("--movielens", type=Path, metavar="PATH", help="a MovieLens folder instead of the log")
    add_log_arguments(evaluate)
    add_training_arguments(evaluate)
    evaluate.add_argument("--models", default=",".join(MODEL_NAMES), help=f"comma-separated, from {', '.join(MODEL_NAMES)}")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.set_defaults(run=run_eval)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAPPAREC_BOOTSTRAP)")
    cutoff = parser.add_mutually_exclusive_group()
    cutoff.add_argument("--until-offsets", type=parse_offsets, metavar="P:O,...",
                        help="replay each partition of the events topic up to (excluding) this offset")
    cutoff.add_argument("--until-time", type=parse_time, metavar="ISO", help="replay events before this event time")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=cliargs.non_negative_int, help="two-tower epochs (default: tuned value)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data -> same model)")


def parse_offsets(text: str) -> dict[int, int]:
    """``0:1200,1:980`` -> {0: 1200, 1: 980}."""
    try:
        pairs = (part.split(":") for part in text.split(",") if part.strip())
        offsets = {int(partition): int(offset) for partition, offset in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET[,PARTITION:OFFSET...], got {text!r}") from None
    if not offsets or min(offsets) < 0 or min(offsets.values()) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative PARTITION:OFFSET pairs, got {text!r}")
    return offsets


def parse_time(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) as ms since the epoch."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_models(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown or not names:
        raise UsageError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_NAMES)}")
    return list(dict.fromkeys(names))


# -- data -------------------------------------------------------------------------------


def replayed_log(args: argparse.Namespace) -> tuple["Interactions", "Catalog", dict]:
    from training.replay import replay_log

    # An empty log (or nothing before the cutoff) is replay_log's one-line KapparecError.
    return replay_log(settings.bootstrap(args.bootstrap), until_offsets=args.until_offsets, until_event_time_ms=args.until_time)


def movielens_folder(path: Path) -> tuple["Interactions", "Catalog", dict]:
    """A MovieLens folder through the log's own wire format and parser, so it validates like the log."""
    from streams.movielens import read_movielens
    from streams.schema import encode, parse_catalog, parse_interaction
    from training.data import Catalog, Interactions

    catalog_events, rate_events = read_movielens(path)
    interactions = Interactions.from_events(parse_interaction(encode(e), offset=n) for n, e in enumerate(rate_events))
    catalog = Catalog.from_entries(parse_catalog(encode(c), offset=n) for n, c in enumerate(catalog_events))
    return interactions, catalog, {"dataset": str(path)}


def split_of(interactions: "Interactions", catalog: "Catalog") -> "Split":
    from training.data import retrieval_positives
    from training.split import chronological_split

    return chronological_split(retrieval_positives(interactions), catalog=catalog)


# -- models -----------------------------------------------------------------------------


def two_tower_params(args: argparse.Namespace) -> "TwoTowerParams":
    from training.two_tower.train import TwoTowerParams

    chosen = {"seed": args.seed} | ({} if args.epochs is None else {"epochs": args.epochs})
    return TwoTowerParams(**chosen)


def build_models(names: Sequence[str], args: argparse.Namespace) -> list["Recommender"]:
    from training.baselines import BASELINES
    from training.two_tower.train import TwoTowerRecommender

    return [TwoTowerRecommender(two_tower_params(args), progress=True) if name == TWO_TOWER else BASELINES[name]()
            for name in names]


# -- eval -------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate
    from training.two_tower.report import markdown_table, protocol_line

    names = parse_models(args.models)
    if args.movielens is not None:
        if args.bootstrap or args.until_offsets or args.until_time is not None:
            raise UsageError("--movielens reads a folder: it takes no --bootstrap/--until-offsets/--until-time")
        interactions, catalog, source = movielens_folder(args.movielens)
    else:
        interactions, catalog, source = replayed_log(args)
    split = split_of(interactions, catalog)
    report = evaluate(split, build_models(names, args))
    report["protocol"]["source"] = source
    if args.json:
        print(json.dumps(report, sort_keys=True, default=str))
    else:
        print(protocol_line(report))
        print(markdown_table(report))
    return 0


# -- train ------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate
    from training.registry import ModelRegistry, passes_gate
    from training.two_tower.train import TwoTowerRecommender

    if not 0 <= args.margin < 1:
        raise UsageError(f"--margin must be in [0, 1), got {args.margin}")
    interactions, catalog, log_metadata = replayed_log(args)
    split = split_of(interactions, catalog)
    model = TwoTowerRecommender(two_tower_params(args), progress=True)
    report = evaluate(split, [model])
    metrics = report["models"][TWO_TOWER]
    registry = ModelRegistry(args.models_dir)
    production = registry.production()
    version = registry.register(
        lambda directory: write_version(directory, model, split, report),
        metadata={
            "model": TWO_TOWER,
            "data": {**log_metadata, "split_cutoff_ms": split.cutoff_ms},
            "metrics": metrics,
            "params": model.params.as_dict(),
            "protocol": report["protocol"],
        },
    )
    print(f"registered {version.id}: recall@10={metrics['recall@10']:.4f} ndcg@10={metrics['ndcg@10']:.4f}")
    passed, reason = passes_gate(metrics, production.metadata if production else None, args.margin)
    if passed:
        registry.promote(version.id)
        print(f"promoted {version.id} to production: {reason}")
    else:
        print(f"kept {production.id} in production, {version.id} stays a candidate: {reason}")
    return 0


def write_version(directory: Path, model: "TwoTowerRecommender", split: "Split", report: dict) -> dict:
    """The version's artifacts: export, training curve, evaluation report; returns their metadata."""
    import numpy as np

    from training.two_tower.export import export_two_tower
    from training.two_tower.report import write_report
    from training.two_tower.train import save_training_curve

    users = np.unique(split.train.user_ids)
    sample = np.random.default_rng(model.params.seed).choice(users, min(SCANN_QUERY_USERS, len(users)), replace=False)
    exported = export_two_tower(model, directory, split.known_items, query_users=sorted(sample.tolist()))
    if model.loss_curve:
        save_training_curve(model.loss_curve, directory / "training_curve.png")
    write_report(report, directory)
    return {**exported, "loss_curve": [round(v, 4) for v in model.loss_curve]}
