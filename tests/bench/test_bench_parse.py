"""Parse cost per record (run with `make bench` or `pytest -m bench -s`): a figure, not a gate.

The log's parser beside the pydantic models alone (the parser before msgspec) and beside the
ceiling: msgspec decoding the same bytes into plain dicts, with no schema at all.
"""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from streams.schema import parse_interaction
from streams.synthetic import SyntheticLog
from tests.schema_reference import models_only

pytestmark = pytest.mark.bench


def _best_us_per_record(parse, records: list[bytes], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for raw in records:
            parse(raw)
        best = min(best, time.perf_counter() - began)
    return round(best / len(records) * 1e6, 3)


def test_parse_cost_per_record_beside_a_schemaless_decode():
    log = SyntheticLog(users=2_000, items=1_000, events=50_000, seed=0, malformed_share=0.0)
    records = [record.value for record in log.records()]
    log_time = lambda raw: parse_interaction(raw, offset=1, log_time_ms=2**62)  # noqa: E731, the pipeline's call
    parser = _best_us_per_record(log_time, records)
    with models_only():
        models = _best_us_per_record(log_time, records)
    ceiling = _best_us_per_record(msgspec.json.decode, records)
    result = {"records": len(records), "parser_us": parser, "models_only_us": models,
              "ceiling_decode_us": ceiling, "speedup": round(models / parser, 2), "ratio": round(ceiling / parser, 3)}
    print("\nparse:", json.dumps(result, sort_keys=True))
    # The parser decodes the same JSON and then validates it: it cannot beat the schemaless decode,
    # and it reads every record as it was produced.
    assert parser >= ceiling > 0 and models > 0
    for raw, event in zip(records, log.interactions()):
        parsed = log_time(raw)
        assert (parsed.user_id, parsed.item_id, parsed.event_time) == (event.user_id, event.item_id, event.event_time)
