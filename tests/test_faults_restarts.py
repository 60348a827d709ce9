"""A broker restart and a Redis restart while the log is streamed and served (``make faults``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter

import pytest

from infra.services import REDIS_AOF_DIR
from kapparec.v1 import recommender_pb2 as pb
from tests.faults import (
    STREAM_FLAGS,
    Paced,
    PacedProducer,
    StreamJob,
    assert_acknowledged_exactly_once,
    assert_equals_a_clean_backfill,
    assert_one_line,
    events_committed,
    log_end,
    log_values,
    report_recovery,
    start_live_system,
    wait_for,
)
from tests.logs import produce_synthetic
from tests.serving_helpers import KAPPAREC, TOKEN

pytestmark = pytest.mark.faults

AUTH = (("authorization", f"Bearer {TOKEN}"),)
EVENTS_PER_S = 200
REQUESTS_PER_S = 20


def _logged_event(n: int) -> pb.Event:
    """One LogEvents event, told apart from every other by its request id."""
    return pb.Event(user_id=f"u{n % 60}", item_id=f"i{n % 80}", event_type="play", event_time=int(time.time() * 1000),
                    context=pb.EventContext(request_id=f"fault-{n}"))


def test_a_broker_restart_while_streaming_and_serving_loses_and_duplicates_nothing(stack, tmp_path):
    live = start_live_system(stack, tmp_path)
    logged: dict[int, bytes] = {}

    def log_event(n: int) -> int:
        event = _logged_event(n)
        logged[n] = event.context.request_id
        return live.stub.LogEvents(pb.LogEventsRequest(events=[event]), timeout=10, metadata=AUTH).accepted

    producer = PacedProducer(stack.bootstrap, live.later, EVENTS_PER_S)
    try:
        with Paced(REQUESTS_PER_S, live.recommend) as pages, Paced(5, log_event) as log_events:
            producer.start()
            wait_for(lambda: events_committed(live.store) > 1200, what="the stream job committing new events")
            stack.broker.stop()
            time.sleep(3)
            stack.broker.start()
            back = time.monotonic()
            committed_at_restart = events_committed(live.store)
            stream_back = wait_for(lambda: events_committed(live.store) > committed_at_restart, timeout_s=120,
                                   what="the stream job committing again")
            report_recovery("broker_restart", "stream job commits again", stream_back)
            report_recovery("broker_restart", "LogEvents accepts again", log_events.seconds_until(back))
            producer.join(timeout=120)
            report_recovery("broker_restart", "producer acknowledged again",
                            next(t for t in producer.acknowledged_at if t > back) - back)
        assert not producer.is_alive()
        assert live.stream.running(), live.stream.stderr_path.read_text()[-2000:]
        stream_exit = live.finish()
    finally:
        live.stop()
    assert stream_exit == 0 and live.stream.errors() == [], live.stream.stderr_path.read_text()[-2000:]

    assert pages.failed == [] and len(pages.outcomes) > 50  # serving never needed the broker
    failed_calls = log_events.failed
    assert {code for code, _ in (o.value for o in failed_calls)} <= {"UNAVAILABLE"}, failed_calls
    assert_one_line([details for _, details in (o.value for o in failed_calls)])
    assert producer.failures == [], producer.failures  # the idempotent producer rode out the restart

    held = log_values(stack.bootstrap)
    assert_acknowledged_exactly_once(held, producer.acknowledged, producer.unsure)
    request_ids = _request_ids(held)
    acknowledged_calls = [logged[n] for n, o in enumerate(log_events.outcomes) if o.ok]
    failed_ids = [logged[n] for n, o in enumerate(log_events.outcomes) if not o.ok]
    assert all(request_ids[r] == 1 for r in acknowledged_calls), "an acknowledged LogEvents event not in the log once"
    assert all(request_ids[r] <= 1 for r in failed_ids), "a refused LogEvents event in the log twice"
    assert_equals_a_clean_backfill(stack.bootstrap, stack.redis_url)


def _request_ids(held: Counter[bytes]) -> Counter[str]:
    """How often the log holds each LogEvents event of the test (by its request id)."""
    counts: Counter[str] = Counter()
    for value, n in held.items():
        request_id = json.loads(value).get("context", {}).get("request_id", "")
        if request_id.startswith("fault-"):
            counts[request_id] += n
    return counts


def _restart_redis(stack, lose_state: bool, away_s: float = 3.0) -> float:
    """Redis stopped for ``away_s``, then started: with its append-only file, or (``lose_state``)
    without it, as a Redis whose disk was lost comes back empty. Returns when it answered again."""
    stack.redis_service.stop()
    if lose_state:
        shutil.rmtree(stack.redis_service.run_dir / REDIS_AOF_DIR)
    time.sleep(away_s)
    stack.redis_service.start()
    return time.monotonic()


def test_a_redis_restart_keeps_serving_and_the_job_resumes_from_its_offsets(stack, tmp_path):
    live = start_live_system(stack, tmp_path)
    producer = PacedProducer(stack.bootstrap, live.later, EVENTS_PER_S)
    try:
        with Paced(REQUESTS_PER_S, live.recommend) as pages:
            producer.start()
            wait_for(lambda: events_committed(live.store) > 1200, what="the stream job committing new events")
            back = _restart_redis(stack, lose_state=False)
            committed_at_restart = events_committed(live.store)
            report_recovery("redis_restart", "full pages again", pages.seconds_until(back, _full))

            report_recovery("redis_restart", "stream job commits again",
                            time.monotonic() - back + wait_for(lambda: events_committed(live.store) > committed_at_restart,
                                                               120, "the stream job committing again"))
            producer.join(timeout=120)
        assert live.stream.running(), live.stream.stderr_path.read_text()[-2000:]  # it rode the restart out
        stream_exit = live.finish()
    finally:
        live.stop()
    assert stream_exit == 0 and live.stream.errors() == [], live.stream.stderr_path.read_text()[-2000:]
    assert pages.failed == [] and {o.value for o in pages.outcomes} >= {"degraded", "full"}
    assert producer.failures == []
    assert_acknowledged_exactly_once(log_values(stack.bootstrap), producer.acknowledged, producer.unsure)
    assert_equals_a_clean_backfill(stack.bootstrap, stack.redis_url)


def test_a_redis_that_lost_its_state_is_named_by_the_job_and_rebuilt_by_backfill(stack, tmp_path):
    live = start_live_system(stack, tmp_path)
    lost = live.stream
    half = len(live.later) // 2
    try:
        with Paced(REQUESTS_PER_S, live.recommend) as pages:
            produce_synthetic(stack.bootstrap, live.log, live.later[:half], catalog=False)
            wait_for(lambda: events_committed(live.store) == log_end(stack.bootstrap), timeout_s=120,
                     what="the stream job catching up with the log")
            back = _restart_redis(stack, lose_state=True)
            report_recovery("redis_state_lost", "stream job names the loss",
                            wait_for(lambda: not lost.running(), timeout_s=60, what="the job noticing the loss"))
            rebuilt = subprocess.run([KAPPAREC, "backfill", "--no-progress"], capture_output=True, text=True,
                                     timeout=600, env=lost.env)
            assert rebuilt.returncode == 0, rebuilt.stderr
            published = time.monotonic()
            full_again = pages.seconds_until(published, _full)
            report_recovery("redis_state_lost", "full pages after the backfill published", full_again)
            report_recovery("redis_state_lost", "full pages after Redis came back empty", published + full_again - back)
        live.stream = StreamJob(stack.bootstrap, stack.redis_url, tmp_path, *STREAM_FLAGS)
        produce_synthetic(stack.bootstrap, live.log, live.later[half:], catalog=False)
        stream_exit = live.finish()
    finally:
        live.stop()
    assert lost.process.returncode == 1 and "Traceback" not in lost.stderr_path.read_text()
    assert len(lost.errors()) == 1 and "Redis lost the feature store's state" in lost.errors()[0], (
        lost.stderr_path.read_text()[-2000:])
    assert full_again < 10
    assert pages.failed == [] and "degraded" in {o.value for o in pages.outcomes}
    assert stream_exit == 0 and live.stream.errors() == [], live.stream.stderr_path.read_text()[-2000:]
    assert_equals_a_clean_backfill(stack.bootstrap, stack.redis_url)


def _full(outcome) -> bool:
    return outcome.ok and outcome.value == "full"
