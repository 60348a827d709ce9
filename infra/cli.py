"""``kapparec infra up | down | status | wipe``: the local broker (Apache Kafka), Redis and, opt-in, Flink.

Ports come from ``--broker-port`` / ``--redis-port`` / ``--flink-port``, else from the
stack already recorded in the run directory, else from ``KAPPAREC_*_PORT`` or the defaults.
"""

from __future__ import annotations

import argparse
import json

from kapparec import settings


def register(subparsers) -> None:
    ports = argparse.ArgumentParser(add_help=False)
    ports.add_argument("--broker-port", type=int, help=f"Kafka-protocol broker (env KAPPAREC_BROKER_PORT, default {settings.DEFAULT_BROKER_PORT})")
    ports.add_argument("--redis-port", type=int, help=f"Redis (env KAPPAREC_REDIS_PORT, default {settings.DEFAULT_REDIS_PORT})")
    ports.add_argument("--flink-port", type=int, help=f"Flink REST (env KAPPAREC_FLINK_PORT, default {settings.DEFAULT_FLINK_PORT})")

    infra = subparsers.add_parser("infra", help="the local stack: broker, Redis, opt-in Flink")
    verbs = infra.add_subparsers(dest="infra_verb", metavar="ACTION")
    verbs.required = True

    up = verbs.add_parser("up", parents=[ports], help="start the stack (idempotent) and create the topics")
    up.add_argument("--with-flink", action="store_true", help="also start a local Flink 1.19 cluster (installed on first use)")
    up.set_defaults(run=run_up)

    down = verbs.add_parser("down", parents=[ports], help="stop every service of the stack (idempotent)")
    down.set_defaults(run=run_down)

    wipe = verbs.add_parser("wipe", parents=[ports],
                            help="delete the local log and feature store (every record and feature); the stack must be down")
    wipe.set_defaults(run=run_wipe)

    status = verbs.add_parser("status", parents=[ports], help="one line per service; non-zero exit if one is not healthy")
    status.add_argument("--json", action="store_true", help="print a JSON list instead")
    status.set_defaults(run=run_status)


def local_stack(args: argparse.Namespace):
    from infra.stack import LocalStack, StackPorts

    run_dir = settings.run_dir()
    recorded = (LocalStack.recorded(run_dir) or {}).get("ports", {})
    ports = StackPorts(
        broker=args.broker_port or recorded.get("broker") or settings.broker_port(),
        redis=args.redis_port or recorded.get("redis") or settings.redis_port(),
        flink=args.flink_port or recorded.get("flink") or settings.flink_port(),
    )
    return LocalStack(run_dir, ports)


def run_up(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    stack = local_stack(args)
    started = stack.up(with_flink=args.with_flink)
    created = ensure_topics(stack.bootstrap)
    print(f"started: {', '.join(started) or 'nothing (already up)'}; topics created: {', '.join(created) or 'none (all exist)'}")
    return print_status(stack.status(), as_json=False)


def run_down(args: argparse.Namespace) -> int:
    stopped = local_stack(args).down()
    print(f"stopped: {', '.join(stopped) or 'nothing (already down)'}")
    return 0


def run_wipe(args: argparse.Namespace) -> int:
    wiped = local_stack(args).wipe()
    print(f"wiped: {' and '.join(wiped) or 'nothing (no local log or store)'}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    return print_status(local_stack(args).status(), as_json=args.json)


def print_status(services, as_json: bool) -> int:
    """Print the services; 1 when one that should be up is not healthy."""
    if as_json:
        print(json.dumps([service.as_dict() for service in services]))
    else:
        for service in services:
            print(f"{service.name:<7} {service.kind:<27} port {service.port:<6} pid {service.pid or '-':<8} {service.state}")
    return int(any(service.expected and not service.healthy for service in services))
