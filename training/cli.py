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
    from modelfiles.ranker import LearnedRanker
    from training.data import Catalog, Interactions
    from training.recommender import Recommender
    from training.split import Split
    from training.two_tower.search import SelectedTwoTower
    from training.two_tower.train import TwoTowerRecommender

TWO_TOWER = "two_tower"
FUNNEL = "funnel"
MODEL_NAMES = ("popularity", "item_knn", "ease", TWO_TOWER, FUNNEL)
DEFAULT_MARGIN = 0.02
SCANN_QUERY_USERS = 500


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the two-tower on a replay of the log, register it, gate it")
    add_log_arguments(train)
    add_training_arguments(train)
    train.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                       help="promote unless recall@10 is worse than production's by more than this share (default 0.02)")
    train.add_argument("--models-dir", type=Path, help="model registry (default: KAPPAREC_MODELS_DIR or ./models)")
    train.add_argument("--force", action="store_true",
                       help="promote even if the gate refuses (a worse candidate, or a production model that cannot be rescored)")
    train.add_argument("--ranker", action="store_true",
                       help="also fit the funnel's learned ranker on the held-out split (over a replay of the training "
                            "part) and ship it in the version when it beats serving's blend there")
    train.set_defaults(run=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate baselines and the two-tower on one split")
    evaluate.add_argument("--movielens", type=Path, metavar="PATH", help="a MovieLens folder instead of the log")
    add_log_arguments(evaluate)
    add_training_arguments(evaluate)
    evaluate.add_argument("--models", default=",".join(MODEL_NAMES),
                          help=f"comma-separated, from {', '.join(MODEL_NAMES)} ({FUNNEL}, the serving funnel over "
                          f"features replayed from the training part, ranks with the evaluated {TWO_TOWER}, so it "
                          "brings that row along)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.set_defaults(run=run_eval)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAPPAREC_BOOTSTRAP)")
    cutoff = parser.add_mutually_exclusive_group()
    cutoff.add_argument("--until-offsets", type=parse_offsets, metavar="P:O,...",
                        help="replay each partition of the events topic up to (excluding) this offset")
    cutoff.add_argument("--until-time", type=parse_time, metavar="ISO", help="replay events before this event time")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from training.two_tower.space import DEFAULT_SPACE, SPACES

    parser.add_argument("--epochs", type=cliargs.non_negative_int,
                        help="two-tower epochs (default: chosen on validation; 0 = an untrained model)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data -> same model)")
    parser.add_argument("--search-space", choices=sorted(SPACES), default=DEFAULT_SPACE,
                        help=f"the two-tower's hyperparameter grid searched on validation (default {DEFAULT_SPACE}; "
                        "small is a fixed two-point grid for CI)")
    parser.add_argument("--search-trials", type=cliargs.positive_int, metavar="N",
                        help="how many of the grid's configurations the search tries, a seeded sample "
                        f"(default: {', '.join(f'{name} {space.trials}' for name, space in sorted(SPACES.items()))})")


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
    if FUNNEL in names and TWO_TOWER not in names:
        names.insert(names.index(FUNNEL), TWO_TOWER)
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

    return chronological_split(retrieval_positives(interactions), catalog=catalog, events=interactions)


# -- models -----------------------------------------------------------------------------


def selected_two_tower(args: argparse.Namespace) -> "SelectedTwoTower":
    from training.two_tower.search import SelectedTwoTower
    from training.two_tower.space import SPACES
    from training.two_tower.train import TwoTowerParams

    return SelectedTwoTower(TwoTowerParams(seed=args.seed), SPACES[args.search_space], args.search_trials,
                            fixed_epochs=args.epochs)


def build_models(names: Sequence[str], args: argparse.Namespace) -> list["Recommender"]:
    from training.baselines import BASELINES

    return [selected_two_tower(args) if name == TWO_TOWER else BASELINES[name]() for name in names if name != FUNNEL]


def with_selection(report: dict, models: Sequence["Recommender"]) -> dict:
    """The report, with each validation-selected model's search and chosen parameters."""
    for model in models:
        if hasattr(model, "selection"):
            report["models"][model.name] |= {"selection": model.selection, "params": model.params.as_dict()}
    return report


# -- eval -------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate
    from training.two_tower.report import markdown_table, protocol_line, selection_table

    names = parse_models(args.models)
    if args.movielens is not None:
        if args.bootstrap or args.until_offsets or args.until_time is not None:
            raise UsageError("--movielens reads a folder: it takes no --bootstrap/--until-offsets/--until-time")
        interactions, catalog, source = movielens_folder(args.movielens)
    else:
        interactions, catalog, source = replayed_log(args)
    split = split_of(interactions, catalog)
    models = build_models(names, args)
    report = with_selection(evaluate(split, models), models)
    if FUNNEL in names:
        from training.funnel_eval import evaluate_funnel

        two_tower = next(model for model in models if model.name == TWO_TOWER)
        report["models"][FUNNEL] = evaluate_funnel(split, two_tower.model, seed=args.seed)
    report["protocol"]["source"] = source
    if args.json:
        print(json.dumps(report, sort_keys=True, default=str))
    else:
        print(protocol_line(report))
        print(markdown_table(report))
        for name, metrics in sorted(report["models"].items()):
            if "selection" in metrics:
                print(f"\n{name}: {selection_table(metrics['selection'])}")
    return 0


# -- train ------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    """Search on validation, measure the chosen configuration's held-out twin once, refit it on all
    the replayed data, gate it against production rescored on the same split, register, promote."""
    from modelfiles.registry import ModelRegistry
    from training.data import retrieval_positives
    from training.evaluate import evaluate
    from training.gate import decide
    from training.two_tower.train import TwoTowerRecommender

    if not 0 <= args.margin < 1:
        raise UsageError(f"--margin must be in [0, 1), got {args.margin}")
    interactions, catalog, log_metadata = replayed_log(args)
    split = split_of(interactions, catalog)
    twin = selected_two_tower(args)
    report = with_selection(evaluate(split, [twin]), [twin])
    metrics = {k: v for k, v in report["models"][TWO_TOWER].items() if k not in ("selection", "params")}
    deployed = TwoTowerRecommender(twin.params, progress=True)
    positives = retrieval_positives(interactions)
    deployed.fit(positives, catalog, events=interactions)
    registry = ModelRegistry(args.models_dir)
    production = registry.production()
    ranker, ranker_record = None, None
    if args.ranker:
        from training.funnel_eval import ranker_for_serving

        ranker, ranker_record = ranker_for_serving(split, twin.model, args.seed)
    decision = decide(metrics, production, split, args.margin, args.force)
    version = registry.register(
        lambda directory: write_version(directory, deployed, positives, catalog, report, ranker),
        metadata={
            "model": TWO_TOWER,
            "data": {**log_metadata, "split_cutoff_ms": split.cutoff_ms},
            "refit": {
                "on": "all data: every replayed interaction up to the training cutoff",
                "offsets": log_metadata["offsets"],
                "positives": len(positives),
                "metrics_from": "the held-out twin: the same configuration fitted on the split's training part",
            },
            "metrics": metrics,
            "params": twin.params.as_dict(),
            "selection": twin.selection,
            "protocol": report["protocol"],
            "gate": decision.record(),
            **({"ranker": ranker_record} if ranker_record is not None else {}),
        },
    )
    print(f"registered {version.id}: held-out twin recall@10={metrics['recall@10']:.4f} ndcg@10={metrics['ndcg@10']:.4f}")
    if decision.promote:
        registry.promote(version.id)
        print(f"promoted {version.id} to production: {decision.reason}")
    else:
        kept = f"kept {production.id} in production" if production else "nothing promoted"
        print(f"{kept}, {version.id} stays a candidate: {decision.reason}")
    return 0


def write_version(
    directory: Path, model: "TwoTowerRecommender", positives: "Interactions", catalog: "Catalog", report: dict,
    ranker: "LearnedRanker | None" = None,
) -> dict:
    """The version's artifacts: export, training curve, evaluation report, the learned ranker if
    any; returns their metadata."""
    import numpy as np

    from training.two_tower.export import export_two_tower
    from training.two_tower.report import write_report
    from training.two_tower.train import save_training_curve

    items = sorted(set(positives.item_ids.tolist()) | set(catalog.item_ids))
    users = np.unique(positives.user_ids)
    sample = np.random.default_rng(model.params.seed).choice(users, min(SCANN_QUERY_USERS, len(users)), replace=False)
    exported = export_two_tower(model, directory, items, query_users=sorted(sample.tolist()))
    if model.loss_curve:
        save_training_curve(model.loss_curve, directory / "training_curve.png")
    write_report(report, directory)
    if ranker is not None:
        from modelfiles.ranker import RANKER_FILE

        ranker.save(directory / RANKER_FILE)
    return {**exported, "loss_curve": [round(v, 4) for v in model.loss_curve]}
