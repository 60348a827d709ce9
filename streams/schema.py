"""The event-log contract: versioned, validated events and their wire format (compact JSON, UTF-8).

Producers build ``InteractionEvent`` / ``CatalogEvent`` / ``ImpressionEvent`` and call ``encode``.
Readers, the pipelines' and serving's ``LogEvents`` alike, call ``parse_interaction`` /
``parse_catalog`` / ``parse_impression`` on the raw record bytes; a bad record raises
``InvalidRecord`` whose ``reason`` goes to the dead-letter topic with the original bytes.

The pydantic models are the contract. The parsers decode with msgspec Structs that state the
same schema (``_InteractionWire`` and its siblings): several times cheaper per record, and
strict, so that whatever they accept the models accept alike. A record they refuse is judged
by the models, which give the documented reason, or accept the lax forms msgspec does not
coerce (a number written as a string, ``true`` as 1). ``tests/test_schema.py`` holds the
parsers to the models on hostile and valid records.

Pipelines do not carry either kind of object: the validated event is flattened into the
``Interaction`` / ``CatalogEntry`` / ``Impression`` named tuples, which are cheap to pickle
and carry the record's log position (partition, offset) so that "latest wins" and lateness
can be decided by log order, which a replay reproduces exactly.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
# Catalog records are at version 2, which added ``release_year``; version 1 records (without it)
# stay valid, so a log written before the field replays unchanged.
CATALOG_SCHEMA_VERSION = 2
CATALOG_SCHEMA_VERSIONS = (1, CATALOG_SCHEMA_VERSION)

# A record larger than this is refused whole: no legitimate event comes near it, and an
# oversized payload is more likely a bug or an attack than data.
MAX_RECORD_BYTES = 16 * 1024

# Event time may run ahead of the broker's append time only by clock skew; far-future
# stamps would pin trending windows and watermarks in the future. Compared with the
# record's log timestamp (not the wall clock) so a replay judges every record the same.
MAX_FUTURE_SKEW_MS = 60 * 60 * 1000

# Four-digit calendar years: wide enough for any catalog (films, books, records), narrow enough
# that a millisecond time sent by mistake is refused rather than read as a year.
MIN_RELEASE_YEAR, MAX_RELEASE_YEAR = 1000, 9999


class EventType(str, enum.Enum):
    IMPRESSION = "impression"
    CLICK = "click"
    VIEW = "view"
    PLAY = "play"
    PROGRESS = "progress"
    COMPLETE = "complete"
    LIKE = "like"
    DISLIKE = "dislike"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATE = "rate"


EVENT_TYPES = tuple(t.value for t in EventType)

# The id contract: 1 to 128 characters, none of them a space, a control character or "|". The
# store joins ids with "|" and "\x1f" into keys and members, so an id holding one could be read
# back as two; such a record is refused (dead-lettered) rather than escaped.
_ID_FORBIDDEN = r"\x00-\x20\x7f|"
ID_PATTERN = rf"^[^{_ID_FORBIDDEN}]+$"
ID_MAX_LENGTH = 128
Id = Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)

# Ids and times are strict (a number is not an id, a string is not a time); enums and
# floats stay lax so "view" and a rating of 4 parse as users write them.


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = Field(default=None, max_length=64)
    device: str | None = Field(default=None, max_length=64)
    page: str | None = Field(default=None, max_length=128)
    position: StrictInt | None = Field(default=None, ge=0)
    request_id: str | None = Field(default=None, max_length=128)
    session_id: str | None = Field(default=None, max_length=128)


class InteractionEvent(BaseModel):
    """A user did something to an item at ``event_time`` (ms since the epoch, event time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: StrictStr = Id
    item_id: StrictStr = Id
    event_type: EventType
    value: float | None = None
    event_time: StrictInt = Field(ge=0)
    context: Context = Context()

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be finite")
        return value

    @model_validator(mode="after")
    def _value_fits_type(self) -> "InteractionEvent":
        misfit = value_misfit(self.event_type.value, self.value)
        if misfit:
            raise ValueError(misfit)
        return self


def value_misfit(event_type: str, value: float | None) -> str | None:
    """Why ``value`` does not fit an event of ``event_type`` (None: it fits); one rule for both schemas."""
    if event_type == "rate" and (value is None or not 0.0 <= value <= 10.0):
        return "a rate event needs a value between 0 and 10"
    if event_type == "progress" and (value is None or not 0.0 <= value <= 1.0):
        return "a progress event needs a watch fraction between 0 and 1"
    if event_type in ("purchase", "add_to_cart") and value is not None and value < 0:
        return "a price cannot be negative"
    return None


class CatalogEvent(BaseModel):
    """A version of an item's catalog entry; the latest version in log order wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[CATALOG_SCHEMA_VERSIONS] = CATALOG_SCHEMA_VERSION
    item_id: StrictStr = Id
    title: StrictStr = Field(max_length=512)
    categories: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()  # empty: available everywhere
    age_rating: str | None = Field(default=None, max_length=16)
    created_at: StrictInt = Field(ge=0)
    active: StrictBool = True
    # A calendar year, not a time: many catalogs predate 1970 (negative epoch times) or know only the year.
    release_year: StrictInt | None = Field(default=None, ge=MIN_RELEASE_YEAR, le=MAX_RELEASE_YEAR)

    @model_validator(mode="after")
    def _fields_of_its_version(self) -> "CatalogEvent":
        misfit = catalog_version_misfit(self.schema_version, self.release_year)
        if misfit:
            raise ValueError(misfit)
        return self


def catalog_version_misfit(schema_version: int, release_year: int | None) -> str | None:
    """Why a catalog record holds a field its version does not have (None: it holds none)."""
    if schema_version == 1 and release_year is not None:
        return "release_year needs schema_version 2"
    return None


class ShownItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: StrictStr = Id
    position: StrictInt = Field(ge=1)  # the 1-based rank it was shown at
    source: StrictStr = Field(max_length=32)  # the candidate source that placed it


class ImpressionEvent(BaseModel):
    """A page serving showed a user, on the ``impressions`` topic: what A/B analysis joins interactions to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: StrictStr = Field(min_length=1, max_length=128)
    user_id: StrictStr = Id
    event_time: StrictInt = Field(ge=0)
    bucket: StrictStr = Field(default="", max_length=129)  # "experiment/variant"; "" outside every experiment
    model_version: StrictStr = Field(default="", max_length=128)
    served_from: StrictStr = Field(default="full", max_length=16)
    items: tuple[ShownItem, ...] = Field(max_length=200)


class InvalidRecord(ValueError):
    """A record that breaks the contract; ``reason`` ("kind: detail") is short and machine-groupable."""

    def __init__(self, kind: str, detail: str):
        self.reason = f"{kind}: {detail}"
        super().__init__(self.reason)
        self.detail = detail  # where and what, without the kind: what an API caller is told


class Interaction(NamedTuple):
    """A validated interaction as pipelines carry it, with its position in the log."""

    user_id: str
    item_id: str
    event_type: str
    value: float | None
    event_time: int
    region: str
    device: str
    session_id: str
    partition: int
    offset: int
    # The page this interaction answered (the context's request_id): attribution joins on it.
    request_id: str = ""
    # The highest event_time among earlier records of the same partition (-1 if none): the
    # log-order watermark lateness is judged against, so a replay judges every record alike.
    log_watermark: int = -1


class CatalogEntry(NamedTuple):
    """A validated catalog version as pipelines carry it, with its position in the log."""

    item_id: str
    title: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    age_rating: str | None
    created_at: int
    active: bool
    partition: int
    offset: int
    # Catalog schema 2's optional field; after the log position so that version 1's rows keep their shape.
    release_year: int | None = None


class Impression(NamedTuple):
    """A validated impression as pipelines carry it: the page, each item as (item_id, position, source)."""

    request_id: str
    user_id: str
    event_time: int
    bucket: str
    items: tuple[tuple[str, int, str], ...]
    partition: int
    offset: int


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


# The same schema as msgspec Structs, strict where the models are lax (see the module docstring).
# Ids are checked for forbidden characters after decoding, all of a record's ids in one search:
# a msgspec pattern costs a Python regex call per id, which was most of the decoding.
_WireId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_LENGTH)]
_id_breaker = re.compile(f"[{_ID_FORBIDDEN}]").search
# The event type as its plain string: an EventType's .value is a descriptor call per record.
_WireEventType = Literal.__getitem__(EVENT_TYPES)


def _text(max_length: int) -> Any:
    return Annotated[str, msgspec.Meta(max_length=max_length)]


class _ContextWire(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    region: _text(64) | None = None
    device: _text(64) | None = None
    page: _text(128) | None = None
    position: Annotated[int, msgspec.Meta(ge=0)] | None = None
    request_id: _text(128) | None = None
    session_id: _text(128) | None = None


class _InteractionWire(msgspec.Struct, forbid_unknown_fields=True):
    user_id: _WireId
    item_id: _WireId
    event_type: _WireEventType
    event_time: Annotated[int, msgspec.Meta(ge=0)]
    value: float | None = None
    context: _ContextWire = _ContextWire()
    schema_version: Literal[1] = SCHEMA_VERSION


class _CatalogWire(msgspec.Struct, forbid_unknown_fields=True):
    item_id: _WireId
    title: _text(512)
    created_at: Annotated[int, msgspec.Meta(ge=0)]
    categories: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    age_rating: _text(16) | None = None
    active: bool = True
    release_year: Annotated[int, msgspec.Meta(ge=MIN_RELEASE_YEAR, le=MAX_RELEASE_YEAR)] | None = None
    schema_version: Literal[CATALOG_SCHEMA_VERSIONS] = CATALOG_SCHEMA_VERSION


class _ShownItemWire(msgspec.Struct, forbid_unknown_fields=True):
    item_id: _WireId
    position: Annotated[int, msgspec.Meta(ge=1)]
    source: _text(32)


class _ImpressionWire(msgspec.Struct, forbid_unknown_fields=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    user_id: _WireId
    event_time: Annotated[int, msgspec.Meta(ge=0)]
    items: Annotated[tuple[_ShownItemWire, ...], msgspec.Meta(max_length=200)]
    bucket: _text(129) = ""
    model_version: _text(128) = ""
    served_from: _text(16) = "full"
    schema_version: Literal[1] = SCHEMA_VERSION


class _Misfit(Exception):
    """A wire record that passed msgspec but not a check msgspec cannot state (ids, the value's fit)."""


def _interaction_wire(raw: bytes) -> _InteractionWire:
    # No finiteness check: msgspec refuses NaN and infinities itself (no JSON for them, or out of range).
    event = _decode_interaction(raw)
    if _id_breaker(event.user_id + event.item_id) or value_misfit(event.event_type, event.value):
        raise _Misfit
    return event


def _catalog_wire(raw: bytes) -> _CatalogWire:
    item = _decode_catalog(raw)
    if _id_breaker(item.item_id) or catalog_version_misfit(item.schema_version, item.release_year):
        raise _Misfit
    return item


def _impression_wire(raw: bytes) -> _ImpressionWire:
    shown = _decode_impression(raw)
    if _id_breaker(shown.user_id + "".join(item.item_id for item in shown.items)):
        raise _Misfit
    return shown


_decode_interaction = msgspec.json.Decoder(_InteractionWire).decode
_decode_catalog = msgspec.json.Decoder(_CatalogWire).decode
_decode_impression = msgspec.json.Decoder(_ImpressionWire).decode
_WIRE_PARSERS: dict[type[BaseModel], Callable[[bytes], Any]] = {
    InteractionEvent: _interaction_wire,
    CatalogEvent: _catalog_wire,
    ImpressionEvent: _impression_wire,
}


def _validate(model: type[BaseModel], raw: bytes) -> Any:
    """The record as a wire Struct, or as ``model`` when only the model's lax forms accept it."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecord("oversized", f"{len(raw)} bytes > {MAX_RECORD_BYTES}")
    try:
        return _WIRE_PARSERS[model](raw)
    except (msgspec.DecodeError, _Misfit):  # msgspec's ValidationError is a DecodeError
        pass
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        kind = "bad_json" if first["type"] == "json_invalid" else first["type"]
        raise InvalidRecord(kind, f"{where}: {first['msg']}") from None


def parse_interaction(
    raw: bytes, *, partition: int = 0, offset: int = 0, log_time_ms: int | None = None
) -> Interaction:
    event = _validate(InteractionEvent, raw)
    if log_time_ms is not None and event.event_time > log_time_ms + MAX_FUTURE_SKEW_MS:
        raise InvalidRecord(
            "future_event_time",
            f"event_time {event.event_time} is more than {MAX_FUTURE_SKEW_MS} ms after the log time {log_time_ms}",
        )
    ctx = event.context
    event_type = event.event_type if type(event) is _InteractionWire else event.event_type.value
    # tuple.__new__ is Interaction(...) without its defaults' handling: this runs per record.
    return tuple.__new__(Interaction, (
        event.user_id, event.item_id, event_type, event.value, event.event_time, ctx.region or "", ctx.device or "",
        ctx.session_id or "", partition, offset, ctx.request_id or "", -1,
    ))


def parse_interactions(records: Sequence, partition: int, high_water: int) -> tuple[list, list, int, int | None]:
    """``parse_interaction`` of each Kafka record (``value``, ``offset``, ``timestamp``) of one
    partition in log order, each interaction carrying its ``log_watermark``: the greatest event
    time of the valid records before it, from ``high_water`` on.

    Returns (the interactions, (record, InvalidRecord) of each refused one, the high water after
    them all, the least event time or None). Every verdict and value is ``parse_interaction``'s:
    a record the wire Struct does not take goes through it whole.
    """
    valid, refused, least = [], [], None
    wire, new = _interaction_wire, tuple.__new__  # bound once: this runs per record
    for record in records:
        raw, log_time = record.value, record.timestamp
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise _Misfit
            event = wire(raw)
            event_time = event.event_time
            if log_time is not None and event_time > log_time + MAX_FUTURE_SKEW_MS:
                raise _Misfit
        except (msgspec.DecodeError, _Misfit):
            try:
                parsed = parse_interaction(raw, partition=partition, offset=record.offset, log_time_ms=log_time)
            except InvalidRecord as invalid:
                refused.append((record, invalid))
                continue
            event_time = parsed.event_time
            valid.append(new(Interaction, (*parsed[:-1], high_water)))
        else:
            ctx = event.context
            valid.append(new(Interaction, (
                event.user_id, event.item_id, event.event_type, event.value, event_time, ctx.region or "",
                ctx.device or "", ctx.session_id or "", partition, record.offset, ctx.request_id or "", high_water,
            )))
        if event_time > high_water:
            high_water = event_time
        if least is None or event_time < least:
            least = event_time
    return valid, refused, high_water, least


def parse_catalog(raw: bytes, *, partition: int = 0, offset: int = 0) -> CatalogEntry:
    item = _validate(CatalogEvent, raw)
    return CatalogEntry(
        item.item_id,
        item.title,
        tuple(item.categories),
        tuple(item.regions),
        item.age_rating,
        item.created_at,
        item.active,
        partition,
        offset,
        item.release_year,
    )


def parse_impression(raw: bytes, *, partition: int = 0, offset: int = 0) -> Impression:
    shown = _validate(ImpressionEvent, raw)
    return Impression(
        shown.request_id,
        shown.user_id,
        shown.event_time,
        shown.bucket,
        tuple((item.item_id, item.position, item.source) for item in shown.items),
        partition,
        offset,
    )
