"""``kapparec features``: inspect and manage feature-store versions."""

from __future__ import annotations

import sys

from kapparec import cliargs


def register(verbs) -> None:
    features = verbs.add_parser("features", help="inspect the feature store (dump, stats, versions, rollback, gc)")
    sub = features.add_subparsers(dest="features_verb", metavar="ACTION", required=True)

    dump = sub.add_parser("dump", help="print the whole feature state as canonical, sorted JSON lines")
    cliargs.add_redis(dump)
    dump.add_argument("--version", help="a version id (default: the current one)")
    dump.set_defaults(run=run_dump)

    versions = sub.add_parser("versions", help="list versions, marking current and previous")
    cliargs.add_redis(versions)
    versions.set_defaults(run=run_versions)

    rollback = sub.add_parser("rollback", help="switch readers back to the previous version")
    cliargs.add_redis(rollback)
    rollback.set_defaults(run=run_rollback)

    stats = sub.add_parser("stats", help="keys and bytes per feature of a version")
    cliargs.add_redis(stats)
    stats.add_argument("--version", help="a version id (default: the current one)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(run=run_stats)

    gc = sub.add_parser("gc", help="drop versions neither current nor previous, and builds that crashed")
    cliargs.add_redis(gc)
    gc.add_argument("--grace-minutes", type=cliargs.positive_float, default=15.0,
                    help="a build whose heartbeat is older than this crashed (default 15)")
    gc.set_defaults(run=run_gc)


def _store(args):
    from featurestore.redis_store import RedisFeatureStore

    return RedisFeatureStore(cliargs.redis_url(args))


def run_dump(args) -> int:
    store = _store(args)
    version = store.require_version(args.version)
    out = sys.stdout
    for line in store.dump(version):
        out.write(line + "\n")
    return 0


def run_versions(args) -> int:
    from featurestore import layout

    store = _store(args)
    marks = {store.client.get(layout.CURRENT): "current", store.client.get(layout.PREVIOUS): "previous"}
    for version, meta in store.versions().items():
        print(f"{version}\t{meta.get('state')}\t{meta.get('source')}\t{marks.get(version, '')}".rstrip())
    return 0


def run_rollback(args) -> int:
    print(f"features: current version is now {_store(args).rollback()}")
    return 0


def run_gc(args) -> int:
    dropped = _store(args).collect_garbage(build_grace_s=args.grace_minutes * 60)
    print(f"dropped {', '.join(dropped)}" if dropped else "nothing to drop")
    return 0


def run_stats(args) -> int:
    import json

    store = _store(args)
    version = store.require_version(args.version)
    stats = store.stats(version)
    if args.json:
        print(json.dumps({"version": version, "features": stats}, sort_keys=True))
        return 0
    print(f"{'feature':<20}{'keys':>12}{'MiB':>10}   (version {version})")
    for feature, entry in stats.items():
        print(f"{feature:<20}{entry['keys']:>12,}{entry['bytes'] / 2**20:>10.1f}")
    return 0
