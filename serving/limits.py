"""Request validation: every limit a request must meet, each refusal one line for INVALID_ARGUMENT."""

from __future__ import annotations

import re

from kapparec.errors import KapparecError
from streams.schema import ID_PATTERN
from serving.filters import AGE_SCALE

DEFAULT_K, MAX_K = 20, 200
MAX_ID_LENGTH = 128  # the log's own id limit (streams/schema.py)
MAX_TEXT_LENGTH = 64
MAX_LIST_LENGTH = 100
MAX_EXCLUDED_IDS = 1000
MAX_EVENTS_PER_CALL = 1000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
PAGES = ("", "home", "item", "cart")


class InvalidRequest(KapparecError):
    """A request that breaks a limit: INVALID_ARGUMENT with this message."""


def k_of(k: int) -> int:
    if k == 0:
        return DEFAULT_K
    if not 1 <= k <= MAX_K:
        raise InvalidRequest(f"k must be between 1 and {MAX_K} (0 means {DEFAULT_K}), got {k}")
    return k


def identifier(name: str, value: str, required: bool = True) -> str:
    if required and not value:
        raise InvalidRequest(f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if value and not re.fullmatch(ID_PATTERN, value):
        raise InvalidRequest(f"{name} has a character no id may hold (a space, a control character or '|')")
    return value


def text(name: str, value: str, choices: tuple[str, ...] = ()) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidRequest(f"{name} is longer than {MAX_TEXT_LENGTH} characters")
    if choices and value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(c or repr('') for c in choices)}, got {value!r}")
    return value


def texts(name: str, values, limit: int = MAX_LIST_LENGTH, check=None) -> tuple[str, ...]:
    if len(values) > limit:
        raise InvalidRequest(f"{name} has {len(values)} entries, at most {limit} are allowed")
    check = check or (lambda value: text(name, value))
    return tuple(check(value) for value in values)


def age_rating(value: str) -> str:
    return text("filters.max_age_rating", value, ("", *AGE_SCALE))
