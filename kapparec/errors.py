"""Errors that the CLI turns into a one-line message and a non-zero exit."""


class KapparecError(Exception):
    """An expected failure with a message fit for a user (bad input, unreachable service, ...)."""

    exit_code = 1


class UsageError(KapparecError):
    """The command line itself is wrong."""

    exit_code = 2


class Interrupted(KapparecError):
    """A job stopped by SIGINT or SIGTERM before its end: raised from the signal handler, so that
    Beam, which turns a KeyboardInterrupt inside a step into a RuntimeError, re-raises it as it is."""

    exit_code = 130
