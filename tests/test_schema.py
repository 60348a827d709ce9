"""The log's contract under fuzzing, and the id contract that keeps separators out of state."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.attribution import day_entity
from featurestore.definitions import history_member, parse_history_member
from featurestore.redis_store import RedisFeatureStore
from streams.dlq import read_dead_letters
from streams.schema import ID_PATTERN, Interaction, InvalidRecord, parse_impression, parse_interaction
from streams.synthetic import LogRecord, SyntheticLog
from tests.logs import produce_synthetic
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
