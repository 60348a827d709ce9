"""Errors that the CLI turns into a one-line message and a non-zero exit."""


class KapparecError(Exception):
    """An expected failure with a message fit for a user (bad input, unreachable service, ...)."""

    exit_code = 1


class UsageError(KapparecError):
    """The command line itself is wrong."""

    exit_code = 2
