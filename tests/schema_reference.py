"""The log's contract as the pydantic models alone judge it: the reference the msgspec parsers are held to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest.mock import patch

import msgspec

from streams import schema


def _refuse(raw: bytes):
    raise msgspec.DecodeError("the msgspec path is switched off")


@contextlib.contextmanager
def models_only() -> Iterator[None]:
    """Within it, ``schema.parse_*`` judge every record by the models: the parsers as they were
    before msgspec, with the same flattening, checks and reasons."""
    with patch.dict(schema._WIRE_PARSERS, {model: _refuse for model in schema._WIRE_PARSERS}):
        yield
