"""``kapparec serve`` (the gRPC endpoint) and ``kapparec recommend`` (a client that prints a table)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kapparec import cliargs, settings
from kapparec.errors import KapparecError, UsageError

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9464


def register(verbs) -> None:
    serve = verbs.add_parser("serve", help="serve recommendations over gRPC (health, reflection, metrics)",
                             description="Serve the production model and the current feature version.")
    cliargs.add_bootstrap(serve)
    cliargs.add_redis(serve)
    serve.add_argument("--port", type=cliargs.positive_int, default=DEFAULT_PORT, help=f"gRPC port (default {DEFAULT_PORT})")
    serve.add_argument("--metrics-port", type=cliargs.positive_int, default=DEFAULT_METRICS_PORT,
                       help=f"Prometheus metrics port (default {DEFAULT_METRICS_PORT})")
    serve.add_argument("--workers", type=cliargs.positive_int, default=1,
                       help="server processes sharing the port (SO_REUSEPORT); one per core")
    serve.add_argument("--models-dir", type=Path, metavar="DIR", help="the model registry (env KAPPAREC_MODELS_DIR; default ./models)")
    serve.add_argument("--token", help="require 'authorization: Bearer TOKEN' on LogEvents (env KAPPAREC_TOKEN)")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="... and this private key")
    serve.add_argument("--max-in-flight", type=cliargs.positive_int, default=32, metavar="N",
                       help="requests one worker holds at once, running or waiting for a thread; "
                            "more get RESOURCE_EXHAUSTED at once (default 32)")
    serve.add_argument("--threads", type=cliargs.positive_int, default=4, metavar="N",
                       help="threads that run one worker's requests (default 4): a request holds the GIL "
                            "for most of its CPU, so more threads only take turns at it")
    serve.add_argument("--experiments", type=Path, metavar="FILE",
                       help="A/B experiments (TOML), reloaded on change (env KAPPAREC_EXPERIMENTS; default ./experiments.toml)")
    serve.set_defaults(run=run_serve)

    recommend = verbs.add_parser("recommend", help="ask a running server for recommendations and print them")
    recommend.add_argument("user", nargs="?", default="", help="the user to recommend for")
    recommend.add_argument("--server", default=f"localhost:{DEFAULT_PORT}", metavar="HOST:PORT")
    recommend.add_argument("--k", type=cliargs.positive_int, default=10)
    recommend.add_argument("--region", default="")
    add_client_security(recommend)
    group = recommend.add_mutually_exclusive_group()
    group.add_argument("--similar", metavar="ITEM", help="items similar to ITEM (for USER if given)")
    group.add_argument("--trending", action="store_true", help="what is trending (in --region)")
    recommend.set_defaults(run=run_recommend)

    simulate = verbs.add_parser("simulate", help="simulated users with planted tastes drive a live server end to end",
                                description="Users of the synthetic world request pages, click by taste and "
                                            "position, and send what they did back through LogEvents.")
    simulate.add_argument("--users", type=cliargs.positive_int, default=100, help="simulated users (default 100)")
    simulate.add_argument("--duration", type=cliargs.positive_float, default=60.0, metavar="S", help="seconds (default 60)")
    simulate.add_argument("--server", default=f"localhost:{DEFAULT_PORT}", metavar="HOST:PORT")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the users' choices")
    simulate.add_argument("--k", type=cliargs.positive_int, default=10, help="items per page")
    simulate.add_argument("--clients", type=cliargs.positive_int, default=8, help="concurrent client threads")
    simulate.add_argument("--think", type=float, default=0.2, metavar="S", help="pause after each page (default 0.2 s)")
    add_client_security(simulate)
    for name, default in (("users", 1000), ("items", 500), ("seed", 0)):
        simulate.add_argument(f"--world-{name}", type=int, default=default,
                              help=f"the synthetic log's --{name} the server's data came from (default {default})")
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON")
    simulate.set_defaults(run=run_simulate)


def add_client_security(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, metavar="PEM",
                        help="talk TLS to a server whose certificate this CA (or self-signed certificate) issued")
    parser.add_argument("--token", help="send 'authorization: Bearer TOKEN' (env KAPPAREC_TOKEN)")


def run_serve(args: argparse.Namespace) -> int:
    from serving.server import ServeSettings, serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise KapparecError(f"TLS file not found: {path}")
    experiments_file = settings.experiments_file(args.experiments)
    _check_experiments(experiments_file, args.models_dir)
    serve(ServeSettings(
        port=args.port,
        metrics_port=args.metrics_port,
        workers=args.workers,
        bootstrap=settings.bootstrap(args.bootstrap),
        redis_url=cliargs.redis_url(args),
        models_dir=args.models_dir,
        token=args.token or os.environ.get("KAPPAREC_TOKEN") or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        experiments_file=experiments_file,
        max_in_flight=args.max_in_flight,
        threads=args.threads,
    ))
    return 0


def _check_experiments(path: Path, models_dir: Path | None) -> None:
    """A bad experiments file stops ``serve`` before it starts; once serving, a bad edit is refused and logged."""
    from modelfiles.registry import ModelRegistry
    from serving import experiments

    registry = ModelRegistry(models_dir)
    for version in sorted(experiments.load(path).model_versions()):
        registry.get(version)


def run_recommend(args: argparse.Namespace) -> int:
    import grpc

    from kapparec.v1 import recommender_pb2 as pb
    from kapparec.v1 import recommender_pb2_grpc as pb_grpc
    from serving.client import bearer, open_channel

    if not (args.user or args.similar or args.trending):
        raise UsageError("give a USER, --similar ITEM or --trending")
    metadata = bearer(args.token or os.environ.get("KAPPAREC_TOKEN") or None)
    with open_channel(args.server, args.tls_ca) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        try:
            if args.trending:
                response = stub.Trending(pb.TrendingRequest(region=args.region, k=args.k), timeout=10, metadata=metadata)
            elif args.similar:
                response = stub.SimilarItems(pb.SimilarItemsRequest(item_id=args.similar, k=args.k, user_id=args.user),
                                             timeout=10, metadata=metadata)
            else:
                context = pb.Context(region=args.region)
                response = stub.Recommend(pb.RecommendRequest(user_id=args.user, k=args.k, context=context), timeout=10,
                                          metadata=metadata)
        except grpc.RpcError as exc:
            raise KapparecError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    print(_table(response))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    import json

    from serving.simulate import SimulationSettings, simulate

    cliargs.require(args.think >= 0, "--think cannot be negative")
    cliargs.require(min(args.world_users, args.world_items) > 0, "--world-users and --world-items must be positive")
    summary = simulate(SimulationSettings(
        users=args.users, duration_s=args.duration, server=args.server, seed=args.seed, k=args.k, clients=args.clients,
        think_s=args.think, token=args.token or os.environ.get("KAPPAREC_TOKEN") or None, tls_ca=args.tls_ca,
        world_users=args.world_users, world_items=args.world_items, world_seed=args.world_seed,
    ))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        ctr = "-" if summary["ctr"] is None else f"{summary['ctr']:.3f}"
        useful = "-" if summary["useful_page_share"] is None else f"{summary['useful_page_share']:.0%}"
        print(f"{summary['users']} users, {summary['requests']} pages, {summary['impressions']} impressions, "
              f"{summary['clicks']} clicks: CTR {ctr}, useful pages {useful}, errors {summary['errors'] or 'none'}")
        for bucket, row in summary["by_bucket"].items():
            print(f"  bucket {bucket or '(none)'}: {row['impressions']} impressions, CTR {row['ctr'] or 0:.3f}")
    return 0 if summary["requests"] else 1


def _table(response) -> str:
    rows = [("rank", "item", "title", "source", "explanation")]
    rows += [(str(i.rank), i.item_id, i.title, i.source, i.explanation) for i in response.items]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    footer = f"model {response.model_version or '(none)'}, served {response.served_from}"
    footer += f", bucket {response.bucket}" if response.bucket else ""
    return "\n".join([*lines, footer + (", widened to popular items" if response.widened else "")])
