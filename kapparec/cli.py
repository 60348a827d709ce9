"""The ``kapparec`` console script: one verb per area, each registered by that area's ``cli`` module.

Areas register light argparse definitions only; handlers import their heavy dependencies
(Beam, TensorFlow) when they run, so ``kapparec --help`` and ``infra status`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from kapparec.errors import KapparecError, UsageError

# Each module exposes ``register(subparsers)``, adding verbs whose handler is ``args.run(args)``.
COMMAND_MODULES = (
    "infra.cli",
    "streams.cli",
    "transforms.cli",
    "featurestore.cli",
    "training.cli",
    "training.models_cli",
    "serving.cli",
    "serving.experiments_cli",
    "console.cli",
    "kapparec.bench",
    "kapparec.demo",
)


class OneLineParser(argparse.ArgumentParser):
    """Bad usage gets one line on stderr and exit 2, never a usage dump or traceback."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kapparec", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    verbs.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module, not a missing area
                raise
            continue
        module.register(verbs)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; verbs that run Beam pipelines (``passthrough``) hand unknown --options to Beam."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown and not getattr(args, "passthrough", False):
        raise UsageError(f"kapparec: unrecognized arguments: {' '.join(unknown)} (see --help)")
    args.beam_args = unknown
    return args


# Beam re-raises a DoFn's exception with the step it ran in appended: not the user's concern.
_BEAM_STEP = re.compile(r" \[while running '.*'\]$")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _BEAM_STEP.sub("", text[0]) if text else type(exc).__name__


def translate(exc: BaseException) -> KapparecError | None:
    """Known failures of the services we talk to, as user-facing errors."""
    try:
        import kafka.errors as kafka_errors
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - both are hard dependencies
        return None
    if isinstance(exc, kafka_errors.KafkaTimeoutError) and "bootstrap" in str(exc):
        return KapparecError(f"Kafka: {_one_line(exc)} (is `kapparec infra up` running? see --bootstrap)")
    if isinstance(exc, (kafka_errors.OffsetOutOfRangeError, kafka_errors.NoOffsetForPartitionError)):
        return KapparecError(f"Kafka: the log no longer holds offsets this job was to read (retention deleted them: "
                             f"{_one_line(exc)}); `kapparec backfill` rebuilds the features from what it holds")
    if isinstance(exc, kafka_errors.KafkaError):
        return KapparecError(f"Kafka: {_one_line(exc)}")
    if isinstance(exc, redis_errors.ConnectionError):
        return KapparecError(f"Redis unreachable: {_one_line(exc)} (is `kapparec infra up` running? see --redis)")
    if isinstance(exc, redis_errors.RedisError):
        return KapparecError(f"Redis: {_one_line(exc)}")
    return None


def quiet_library_logs() -> None:
    """kafka-python's network thread warns whenever one of its steps took over 0.1 s of wall time.
    In a job that is this process's main thread holding the GIL in one C call (encoding a commit's
    bundle, decoding a large reply), not a stuck event loop: the warning would report our CPU
    work as the library's fault, in every normal backfill and stream. Errors still show.

    Beam logs a failed step's exception with its traceback before it re-raises it from the
    pipeline's run, where ``main`` reports it in one line."""
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    quiet_library_logs()
    try:
        args = parse(argv)
        result = args.run(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("kapparec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours.
        sys.stderr.close()
        return 0
    except KapparecError as exc:
        print(f"kapparec: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last line of defence for the one-line contract
        known = translate(exc)
        if known is None:
            raise
        print(f"kapparec: error: {_one_line(known)}", file=sys.stderr)
        return known.exit_code


if __name__ == "__main__":
    sys.exit(main())
