"""``kapparec produce synthetic`` / ``kapparec import movielens`` end to end through the console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.schema import InvalidRecord, parse_interaction
from streams.synthetic import START_MS, SyntheticLog
from streams.topics import EVENTS, ITEMS
from tests.logs import empty_log
from tests.test_movielens import MOVIES_CSV, RATINGS_CSV
from tests.test_producer import read_topic

KAPPAREC = str(Path(sys.executable).parent / "kapparec")


def kapparec(*argv: str, bootstrap: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if bootstrap:
        env["KAPPAREC_BOOTSTRAP"] = bootstrap
    return subprocess.run([KAPPAREC, *argv], capture_output=True, text=True, env=env, timeout=120)


def log_contents(bootstrap: str) -> dict:
    return {topic: {p: [(r.key, r.value, r.timestamp) for r in records]
                    for p, records in read_topic(bootstrap, topic).items()}
            for topic in (EVENTS, ITEMS)}


def test_produce_synthetic_lands_every_record(stack):
    done = kapparec("produce", "synthetic", "--users", "40", "--items", "30", "--events", "1500", "--seed", "2",
                    "--malformed-share", "0.02", "--partitions", "3", "--bootstrap", stack.bootstrap)
    assert done.returncode == 0, done.stderr
    assert "30 catalog + 1500 interaction records (30 malformed)" in done.stdout
    events = [r for records in read_topic(stack.bootstrap, EVENTS).values() for r in records]
    assert len(events) == 1500
    assert len(read_topic(stack.bootstrap, ITEMS)[0]) == 30
    failed = 0
    for record in events:
        try:
            parse_interaction(record.value, log_time_ms=record.timestamp)
        except InvalidRecord:
            failed += 1
    assert failed == SyntheticLog(users=40, items=30, events=1500, seed=2, malformed_share=0.02).malformed_count == 30


def test_same_seed_gives_a_byte_identical_log(stack):
    def produce(seed: str) -> dict:
        empty_log(stack.bootstrap)
        done = kapparec("produce", "synthetic", "--users", "20", "--items", "15", "--events", "400",
                        "--seed", seed, "--start-ms", str(START_MS), "--bootstrap", stack.bootstrap)
        assert done.returncode == 0, done.stderr
        return log_contents(stack.bootstrap)

    first = produce("9")
    assert produce("9") == first
    assert produce("10") != first


def test_produce_synthetic_ends_now_by_default_and_says_how_to_pin_it(stack):
    before_ms = int(time.time() * 1000)
    done = kapparec("produce", "synthetic", "--users", "20", "--items", "15", "--events", "400", "--seed", "3",
                    "--bootstrap", stack.bootstrap)
    assert done.returncode == 0, done.stderr
    last_ms = max(timestamp for records in log_contents(stack.bootstrap).values()
                  for partition in records.values() for _, _, timestamp in partition)
    assert before_ms <= last_ms <= int(time.time() * 1000)
    start_ms = int(re.search(r"--start-ms (\d+) reproduces it", done.stdout).group(1))
    pinned = SyntheticLog(users=20, items=15, events=400, seed=3, start_ms=start_ms)
    assert max(r.timestamp_ms for r in pinned.records()) == last_ms


def test_import_movielens(stack, tmp_path):
    (tmp_path / "ratings.csv").write_text(RATINGS_CSV)
    (tmp_path / "movies.csv").write_text(MOVIES_CSV)
    done = kapparec("import", "movielens", str(tmp_path), bootstrap=stack.bootstrap)
    assert done.returncode == 0, done.stderr
    assert "6 catalog + 4 rating records" in done.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["produce", "synthetic", "--users", "-3"], "--users: expected a number above 0"),
        (["produce", "synthetic", "--events", "many"], "--events: expected a whole number"),
        (["produce", "synthetic", "--malformed-share", "2"], "malformed share must be between 0 and 1"),
        (["import", "movielens", "/no/such/folder"], "MovieLens folder not found"),
        (["produce", "synthetic", "--events", "5", "--bootstrap", "127.0.0.1:1"], "no Kafka broker reachable"),
        (["import", "movielens", "."], "not a MovieLens folder"),
    ],
)
def test_errors_are_one_line(argv, message):
    done = kapparec(*argv)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("kapparec: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
