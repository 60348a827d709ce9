"""Flags shared by several verbs, defined once."""

from __future__ import annotations

import argparse

from kapparec import settings
from kapparec.errors import UsageError


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (env KAPPAREC_BOOTSTRAP; default: the local stack)",
    )


def add_redis(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL", help="Redis URL (env KAPPAREC_REDIS_URL; default: the local stack)")


def bootstrap(args: argparse.Namespace) -> str:
    return settings.bootstrap(getattr(args, "bootstrap", None))


def redis_url(args: argparse.Namespace) -> str:
    return settings.redis_url(getattr(args, "redis", None))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {value}")
    return value


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
