"""``kapparec models list|promote|rollback|gc``: the registry from the command line.

``promote`` is the operator's override and does not apply the quality gate (training applies it
before promoting automatically); ``rollback`` returns production to the version that served
before the current one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kapparec import settings
from kapparec.cliargs import non_negative_int
from kapparec.errors import KapparecError

# Shown in the table when present; ``--json`` prints every metric.
KEY_METRICS = ("recall@10", "ndcg@10", "recall@50", "coverage")


def register(subparsers) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--models-dir", type=Path, metavar="DIR", help="the registry (env KAPPAREC_MODELS_DIR; default ./models)")

    models = subparsers.add_parser("models", help="the model registry: list versions, promote, roll back")
    verbs = models.add_subparsers(dest="models_verb", metavar="ACTION")
    verbs.required = True

    listing = verbs.add_parser("list", parents=[where],
                               help="every version, oldest first; * marks production; a damaged one is shown broken")
    listing.add_argument("--json", action="store_true", help="print a JSON list with full metadata instead")
    listing.set_defaults(run=run_list)

    promote = verbs.add_parser("promote", parents=[where], help="make VERSION production (atomic pointer swap, no gate)")
    promote.add_argument("version", metavar="VERSION", help="a version id from `kapparec models list`")
    promote.set_defaults(run=run_promote)

    rollback = verbs.add_parser("rollback", parents=[where], help="production goes back to the version before it")
    rollback.set_defaults(run=run_rollback)

    gc = verbs.add_parser("gc", parents=[where], help="delete old versions, never production or the rollback target")
    gc.add_argument("--keep", type=non_negative_int, default=5, help="non-production versions to keep (default 5)")
    gc.set_defaults(run=run_gc)


def open_registry(args: argparse.Namespace):
    from modelfiles.registry import ModelRegistry

    return ModelRegistry(args.models_dir or settings.models_dir())


def run_list(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    statuses = registry.statuses()
    checked = [(version_id, *checked_version(registry, version_id)) for version_id in registry.version_ids()]
    if args.json:
        rows = [{"id": version_id, "status": "broken" if problem else statuses[version_id],
                 "production": statuses[version_id] == "production", "metadata": version and version.metadata,
                 **({"problem": problem} if problem else {})} for version_id, version, problem in checked]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not checked:
        print(f"no model versions in {registry.root}")
        return 0
    shown = [name for name in KEY_METRICS if any(version and name in version.metrics for _, version, _ in checked)]
    print("  ".join([f"  {'VERSION':<22}", f"{'CREATED':<25}", f"{'STATUS':<10}", *(f"{name:>10}" for name in shown)]))
    for version_id, version, problem in checked:
        mark = "*" if statuses[version_id] == "production" else " "
        metadata = version.metadata if version else {}
        cells = [f"{mark} {version_id:<22}", f"{metadata.get('created_at', '?'):<25}",
                 f"{'broken' if problem else statuses[version_id]:<10}"]
        cells += [metric_cell((version.metrics if version else {}).get(name)) for name in shown]
        print("  ".join(cells + ([problem] if problem else [])))
    return 0


def checked_version(registry, version_id: str):
    """(the version, None), or (None, why it is broken): its metadata, its files, their sizes and hashes."""
    from modelfiles.registry import verify

    try:
        version = registry.get(version_id)
        verify(version)
    except KapparecError as exc:
        return None, str(exc)
    return version, None


def metric_cell(value) -> str:
    return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"


def run_promote(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    previous = registry.production()
    version = registry.promote(args.version)
    print(f"production: {version.id} (was {previous.id if previous else 'none'})")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    previous = registry.production()
    version = registry.rollback()
    print(f"production: {version.id} (rolled back from {previous.id if previous else 'none'})")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    removed = open_registry(args).gc(keep=args.keep)
    print(f"deleted {len(removed)} version(s){': ' + ', '.join(removed) if removed else ''}")
    return 0
