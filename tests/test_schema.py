"""The log's contract under fuzzing, and the id contract that keeps separators out of state."""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.attribution import day_entity
from featurestore.definitions import history_member, parse_history_member
from featurestore.redis_store import RedisFeatureStore
from streams.dlq import read_dead_letters
from streams import schema
from streams.schema import EVENT_TYPES, ID_PATTERN, Interaction, InvalidRecord, parse_catalog, parse_impression, parse_interaction
from streams.synthetic import LogRecord, SyntheticLog
from tests.logs import produce_synthetic
from tests.schema_reference import models_only
from transforms.jobs import backfill

SEPARATORS = ("|", "\x1f", "\t", " ", "\n")


def event(user_id: str, item_id: str = "i1") -> bytes:
    return json.dumps({"user_id": user_id, "item_id": item_id, "event_type": "play", "event_time": 1}).encode()


@settings(max_examples=400)
@given(raw=st.one_of(st.binary(max_size=300), st.builds(lambda u, i: event(u, i), st.text(max_size=140), st.text(max_size=8))))
def test_any_bytes_parse_to_a_valid_interaction_or_a_dead_letter_reason(raw):
    for parse in (parse_interaction, parse_impression):
        try:
            parsed = parse(raw)
        except InvalidRecord as refused:
            assert refused.reason and "\n" not in refused.reason
            continue
        if isinstance(parsed, Interaction):
            assert all(re.fullmatch(ID_PATTERN, i) and len(i) <= 128 for i in (parsed.user_id, parsed.item_id))


@given(user=st.text(min_size=1, max_size=40), item=st.text(min_size=1, max_size=40))
def test_an_id_is_accepted_exactly_when_it_holds_no_separator_and_then_round_trips(user, item):
    clean = not any(sep in user + item for sep in SEPARATORS) and all(ord(c) >= 0x20 and c != "\x7f" for c in user + item)
    try:
        parsed = parse_interaction(event(user, item))
    except InvalidRecord:
        assert not clean
        return
    assert clean and (parsed.user_id, parsed.item_id) == (user, item)
    assert parse_history_member(history_member(item, "play", 5, 0, 9)) == (item, "play", 5)
    assert day_entity(user, item, 86_400_000).rsplit("|", 2) == [user, item, "86400000"]


def test_a_hostile_id_goes_to_the_dlq_and_never_into_state(stack):
    log = SyntheticLog(users=10, items=10, events=200, seed=2)
    produce_synthetic(stack.bootstrap, log)
    clean = state_without_offsets(stack, backfill(stack.bootstrap, stack.redis_url, progress=False)[0])
    hostile = [event("u1|i2"), event("u1\x1fcount\x1fx"), event("u1", "i 1")]
    at = max(r.timestamp_ms for r in log.records())
    produce_synthetic(stack.bootstrap, log, records=[LogRecord(b"u1", raw, at, False) for raw in hostile], catalog=False)
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    letters = {letter.raw: letter.reason for letter in read_dead_letters(stack.bootstrap)}
    assert all("string_pattern_mismatch" in letters[raw] for raw in hostile)
    assert state_without_offsets(stack, version) == clean


def state_without_offsets(stack, version: str) -> list[str]:
    return [line for line in RedisFeatureStore(stack.redis_url).dump(version) if not line.startswith('{"key":"offsets"')]


# --- The msgspec parsers against the pydantic models they restate -------------------------------

_BASES = {
    parse_interaction: {"user_id": "u1", "item_id": "i1", "event_type": "rate", "value": 4.5, "event_time": 5,
                        "context": {"region": "eu", "device": "tv", "page": "home", "position": 0,
                                    "request_id": "r1", "session_id": "s1"}},
    parse_catalog: {"item_id": "i1", "title": "Heat", "categories": ["Action"], "regions": ["eu"],
                    "age_rating": "PG", "created_at": 5, "active": True, "release_year": 1995, "schema_version": 2},
    parse_impression: {"request_id": "r1", "user_id": "u1", "event_time": 5, "bucket": "e/a", "model_version": "v1",
                       "served_from": "full", "items": [{"item_id": "i1", "position": 1, "source": "ann"}]},
}
_NESTED = {"context": _BASES[parse_interaction]["context"], "items": _BASES[parse_impression]["items"][0]}

# Separators, each string limit and one past it (in characters, not bytes), numbers as text, enums.
_BOUNDARY_TEXTS = ["", "u|1", "u\x1f1", "u 1", "u1\n", "\x7f", "4.5", " 4 ", "nan", "inf", "1_0", "-1", "true",
                   *("x" * n for n in (16, 17, 32, 33, 64, 65, 128, 129, 130, 512, 513)), "é" * 128, "é" * 129,
                   "\ud800", *EVENT_TYPES, "teleport", "PLAY"]
_BOUNDARY_SCALARS = [None, True, -1, 0, 1, 2, 3, 999, 1000, 9999, 10000, 1995.0, 2**64, 1.0, 0.5, 10.5, -0.0, "4", [],
                     {}]
_hostile_texts = st.one_of(st.sampled_from(_BOUNDARY_TEXTS), st.text(max_size=20))
_hostile_numbers = st.one_of(
    st.integers(min_value=-3, max_value=12), st.sampled_from([2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, 0.5, 1.0, 10.0, 10.5, 1e308]),
)
_hostile_scalars = st.one_of(st.none(), st.booleans(), _hostile_numbers, _hostile_texts, _hostile_texts)
_hostile_values = st.one_of(
    _hostile_scalars, _hostile_scalars, _hostile_scalars,
    st.recursive(_hostile_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(_hostile_texts, inner, max_size=2)),
                 max_leaves=4),
)


@st.composite
def _records(draw, base: dict) -> dict:
    """``base`` with up to three fields dropped, given hostile values or (objects) mutated in turn, and
    sometimes one field too many."""
    record = dict(base)
    for name in draw(st.lists(st.sampled_from(list(base)), max_size=3, unique=True)):
        how = draw(st.sampled_from(["drop", "hostile", "alike", "alike", "alike", "nested"]))
        if how == "drop":
            del record[name]
        elif how == "alike" and isinstance(base[name], (str, int, float)):  # a value of the right type, or nearly
            record[name] = draw(_hostile_texts if isinstance(base[name], str) else _hostile_numbers)
        elif how == "nested" and name in _NESTED:
            nested = draw(_records(_NESTED[name]))
            record[name] = [nested] * draw(st.sampled_from([1, 2, 200, 201])) if name == "items" else nested
        else:
            record[name] = draw(_hostile_values)
    if draw(st.integers(0, 9)) == 0:
        record[draw(st.sampled_from(["extra", "schema_version", "user_id", "value"]))] = draw(_hostile_values)
    return record


def _wire(record, mangle: str) -> bytes:
    """The record as bytes a producer might write, or break."""
    if mangle == "ascii":
        return json.dumps(record).encode()
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    return {"utf8": raw, "truncated": raw[:-3], "non_utf8": raw[:5] + b"\xff\xfe" + raw[5:],
            "trailing": raw + b" x", "bom": b"\xef\xbb\xbf" + raw}[mangle]


_MANGLES = ["ascii", "ascii", *["utf8"] * 8, "truncated", "non_utf8", "trailing", "bom"]
_records_as_bytes = st.sampled_from(list(_BASES)).flatmap(lambda parse: st.tuples(
    # Mostly the parser's own kind of record, sometimes another kind's.
    st.just(parse), st.sampled_from([parse] * 7 + list(_BASES)).flatmap(lambda kind: _records(_BASES[kind])),
    st.sampled_from(_MANGLES))).map(lambda case: (case[0], _wire(case[1], case[2])))
_hostile_records = st.one_of(
    _records_as_bytes, _records_as_bytes, _records_as_bytes, _records_as_bytes,
    st.tuples(st.sampled_from(list(_BASES)), _hostile_values.map(lambda v: json.dumps(v).encode())),  # not objects
    st.tuples(st.sampled_from(list(_BASES)), st.binary(max_size=40)),
)


def _verdict(parse, raw: bytes) -> str:
    kwargs = {"log_time_ms": 6} if parse is parse_interaction else {}
    try:
        return repr(parse(raw, partition=1, offset=2, **kwargs))  # repr: a 4 is not a 4.0
    except InvalidRecord as refused:
        return f"refused {refused.reason}"


def _reference_verdict(parse, raw: bytes) -> str:
    with models_only():
        return _verdict(parse, raw)


@settings(max_examples=3000, deadline=None)
@given(case=_hostile_records)
def test_the_parsers_accept_and_refuse_exactly_as_the_models_do_with_the_same_reasons(case):
    parse, raw = case
    assert _verdict(parse, raw) == _reference_verdict(parse, raw)


def _single_changes(record: dict):
    """``record`` with one field (nested ones too) set in turn to each boundary or hostile scalar."""
    for name, value in record.items():
        nested = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else value
        if isinstance(nested, dict):
            for changed in _single_changes(nested):
                yield {**record, name: [changed] if nested is not value else changed}
            continue
        for hostile in _BOUNDARY_TEXTS if isinstance(value, str) else _BOUNDARY_SCALARS:
            yield {**record, name: hostile}


@pytest.mark.parametrize("parse", list(_BASES), ids=lambda parse: parse.__name__)
def test_every_field_at_its_boundaries_gets_the_models_verdict(parse):
    cases = [_wire(record, "utf8") for record in _single_changes(_BASES[parse])]
    assert len(cases) > 100
    for raw in cases:
        assert _verdict(parse, raw) == _reference_verdict(parse, raw), raw


def test_records_our_producers_write_take_the_msgspec_path():
    log = SyntheticLog(users=20, items=30, events=300, seed=3, malformed_share=0.0)
    wire = schema._WIRE_PARSERS
    for record in log.records():
        assert [model for model, parse in wire.items() if _decodes(parse, record.value)] == [schema.InteractionEvent]
    assert all(_decodes(wire[schema.CatalogEvent], schema.encode(item)) for item in log.catalog())
    shown = schema.ImpressionEvent(request_id="r1", user_id="u1", event_time=5, items=[
        schema.ShownItem(item_id="i1", position=1, source="ann")])
    assert _decodes(wire[schema.ImpressionEvent], schema.encode(shown))


# A catalog record as schema 1 producers wrote it, before release_year existed.
_CATALOG_V1 = b'{"schema_version":1,"item_id":"i7","title":"Heat (1995)","categories":["action"],"regions":[],' \
              b'"created_at":5,"active":true}'


def test_a_schema_1_catalog_record_stays_valid_without_a_year_and_takes_the_msgspec_path():
    entry = parse_catalog(_CATALOG_V1, partition=1, offset=9)
    assert (entry.item_id, entry.title, entry.release_year, entry.partition, entry.offset) == ("i7", "Heat (1995)", None, 1, 9)
    assert _decodes(schema._WIRE_PARSERS[schema.CatalogEvent], _CATALOG_V1)


def test_a_release_year_needs_schema_2_and_a_year_that_is_not_a_time():
    record = json.loads(_CATALOG_V1)
    assert parse_catalog(json.dumps({**record, "schema_version": 2, "release_year": 1995}).encode()).release_year == 1995
    with pytest.raises(InvalidRecord, match="release_year needs schema_version 2"):
        parse_catalog(json.dumps({**record, "release_year": 1995}).encode())
    with pytest.raises(InvalidRecord, match="release_year"):
        parse_catalog(json.dumps({**record, "schema_version": 2, "release_year": 818_000_000_000}).encode())
    with pytest.raises(InvalidRecord, match="schema_version"):
        parse_catalog(json.dumps({**record, "schema_version": 3}).encode())


def _decodes(wire, raw: bytes) -> bool:
    try:
        wire(raw)
    except (msgspec.DecodeError, schema._Misfit):
        return False
    return True


class _KafkaRecord(NamedTuple):
    value: bytes
    offset: int
    timestamp: int


def _interaction_bytes(case) -> bytes:
    return case[1]


_hostile_interactions = _hostile_records.filter(lambda case: case[0] is parse_interaction).map(_interaction_bytes)
# Valid records too, with event times on both sides of the log time's skew limit.
_valid_interactions = st.builds(lambda time: json.dumps({**_BASES[parse_interaction], "event_time": time}).encode(),
                                st.integers(0, 3 * schema.MAX_FUTURE_SKEW_MS))


@settings(max_examples=1000, deadline=None)
@given(raws=st.lists(st.one_of(_hostile_interactions, _valid_interactions, _valid_interactions), max_size=12),
       log_times=st.lists(st.integers(0, 2 * schema.MAX_FUTURE_SKEW_MS), min_size=12, max_size=12),
       high_water=st.integers(-1, schema.MAX_FUTURE_SKEW_MS))
def test_a_batch_parses_as_its_records_one_by_one_each_carrying_the_high_water_before_it(raws, log_times, high_water):
    records = [_KafkaRecord(raw, 7 + n, log_time) for n, (raw, log_time) in enumerate(zip(raws, log_times))]
    valid, refused, after, least = schema.parse_interactions(records, 3, high_water)
    expected, expected_refused, times = [], [], []
    for record in records:
        try:
            parsed = parse_interaction(record.value, partition=3, offset=record.offset, log_time_ms=record.timestamp)
        except InvalidRecord as invalid:
            expected_refused.append((record.offset, invalid.reason))
            continue
        expected.append(parsed._replace(log_watermark=max([high_water, *times])))
        times.append(parsed.event_time)
    assert repr(valid) == repr(expected)  # repr: a 4 is not a 4.0
    assert [(record.offset, invalid.reason) for record, invalid in refused] == expected_refused
    assert (after, least) == (max([high_water, *times]), min(times, default=None))
