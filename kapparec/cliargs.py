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


def _parsed(text: str, convert, noun: str):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
