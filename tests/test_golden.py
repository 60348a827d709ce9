"""The feature state of a fixed log stays byte-identical across refactors of the jobs.

The golden files were first written by the code at commit 59d6897 (before the batched
pipeline): ``kapparec features dump`` of a backfill over a synthetic log with malformed records
and late records, and the dead letters it wrote (reason, source and original bytes). They were
regenerated deliberately four times: when attribution facts (SHOWN, RESPONDED) joined the
features and the log gained its ``impressions`` (one malformed); when trending became distinct
users per item and hour, one ranking per hour, with an expiry index; when co-occurrence counts
moved from hashes to sorted sets (the same counts, read largest first); when popularity and
affinity moved to one key per bucket (the same counts, expiring in log time); and when SEEN
became bounded (each user's latest-engaged items with their latest engagement time, up to
``seen_limit``); and when session windows became closed once their partition's log time
made every later record of theirs late (their SESSION_ITEMS deleted, a closing index per
partition added); and when the attribution facts moved to one set per (user, item, day),
expiring in log time (the same members, the days in the expiry index). Every other line
stayed as it was. Regenerate
them (``KAPPAREC_WRITE_GOLDEN=1``) only for a deliberate change of feature semantics, in a
commit of its own that says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from kapparec.timeunits import HOUR_MS
from streams.dlq import read_dead_letters
from streams.schema import InteractionEvent, encode
from streams.synthetic import START_MS, LogRecord, SyntheticLog
from tests.logs import impression_records, produce_impressions, produce_synthetic
from transforms.jobs import backfill

GOLDEN = Path(__file__).with_name("golden")
KAPPAREC = str(Path(sys.executable).with_name("kapparec"))


def golden_log() -> tuple[SyntheticLog, list[LogRecord]]:
    """1,500 events (3% malformed, every kind) plus, per 50th user, a record 7 h behind its partition."""
    log = SyntheticLog(users=40, items=60, events=1500, seed=11, malformed_share=0.03, start_ms=START_MS)
    records = list(log.records())
    last_ms = max(r.timestamp_ms for r in records)
    for user in range(0, log.users, 10):
        late = InteractionEvent(user_id=log.user_id(user), item_id=log.item_id(user % log.items),
                                event_type="play", event_time=last_ms - 7 * HOUR_MS)
        records.append(LogRecord(log.user_id(user).encode(), encode(late), last_ms, True))
    return log, records


def dead_letter_lines(bootstrap: str) -> list[str]:
    letters = read_dead_letters(bootstrap)
    return sorted(
        json.dumps({"reason": l.reason, "source": l.source, "sha256": hashlib.sha256(l.raw).hexdigest()}, sort_keys=True)
        for l in letters
    )


def produce_golden_log(bootstrap: str) -> SyntheticLog:
    log, records = golden_log()
    produce_synthetic(bootstrap, log, records=records)
    produce_impressions(bootstrap, impression_records(log))
    return log


def assert_store_matches_golden(stack, log: SyntheticLog) -> None:
    """``kapparec features dump`` and the dead letters, byte for byte (rewritten under KAPPAREC_WRITE_GOLDEN)."""
    dumped = subprocess.run([KAPPAREC, "features", "dump", "--redis", stack.redis_url],
                            capture_output=True, check=False)
    assert dumped.returncode == 0, dumped.stderr
    dumped = dumped.stdout
    letters = "\n".join(dead_letter_lines(stack.bootstrap)) + "\n"
    if os.environ.get("KAPPAREC_WRITE_GOLDEN"):
        (GOLDEN / "features.jsonl").write_bytes(dumped)
        (GOLDEN / "dead_letters.jsonl").write_text(letters)
    assert dumped == (GOLDEN / "features.jsonl").read_bytes()
    assert letters == (GOLDEN / "dead_letters.jsonl").read_text()
    assert letters.count("\n") == log.malformed_count + 1  # and the malformed impression


def test_backfill_dump_and_dead_letters_match_the_golden_files(stack):
    log = produce_golden_log(stack.bootstrap)
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert_store_matches_golden(stack, log)
