"""``kapparec console``: register the verb; the web app itself lives in ``console.app``."""

from __future__ import annotations

import argparse
from pathlib import Path

from kapparec import cliargs
from serving.cli import DEFAULT_PORT as SERVING_PORT

DEFAULT_PORT = 8765


def register(verbs) -> None:
    console = verbs.add_parser("console", help="a web console: trending live, users, items, the system and experiments")
    console.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    console.add_argument("--port", type=cliargs.positive_int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    console.add_argument("--server", default=f"localhost:{SERVING_PORT}", metavar="HOST:PORT",
                         help=f"the gRPC server (default localhost:{SERVING_PORT})")
    cliargs.add_redis(console)
    cliargs.add_bootstrap(console)
    console.add_argument("--metrics-url", metavar="URL",
                         help="the server's Prometheus endpoint, e.g. http://localhost:9464/metrics (default: none)")
    console.add_argument("--models-dir", type=Path, metavar="DIR", help="the model registry (env KAPPAREC_MODELS_DIR; default ./models)")
    console.add_argument("--experiments", type=Path, metavar="FILE",
                         help="the experiments file that names each control (env KAPPAREC_EXPERIMENTS; default ./experiments.toml)")
    console.add_argument("--allow-events", action="store_true",
                         help="show the complete/dislike buttons, which send events through LogEvents (off: read-only)")
    console.add_argument("--token", help="the server's LogEvents token (env KAPPAREC_TOKEN)")
    console.set_defaults(run=run_console)


def run_console(args: argparse.Namespace) -> int:
    import os
    import socket

    from werkzeug.serving import make_server

    from console.app import create_app
    from console.clients import ConsoleConfig
    from kapparec import settings
    from kapparec.errors import KapparecError

    config = ConsoleConfig(
        server=args.server, redis_url=cliargs.redis_url(args), bootstrap=cliargs.bootstrap(args),
        metrics_url=args.metrics_url, models_dir=args.models_dir or settings.models_dir(),
        experiments_file=settings.experiments_file(args.experiments), allow_events=args.allow_events,
        token=args.token or os.environ.get("KAPPAREC_TOKEN") or None,
    )
    # Bound here rather than by Werkzeug, which answers a port in use with its own lines and exit.
    try:
        listening = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise KapparecError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    http = make_server(args.host, args.port, create_app(config), threaded=True, fd=listening.fileno())
    print(f"console on http://{args.host}:{http.port}/ (events {'on' if args.allow_events else 'off'}); Ctrl-C stops it",
          flush=True)
    try:
        http.serve_forever()
    finally:
        http.server_close()
    return 0
