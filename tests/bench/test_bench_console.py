"""The console's event-to-change delay (run with `make bench` or `pytest -m bench -s`): a figure, not a gate.

The figure: from sending ``complete`` through ``LogEvents`` to the user's page showing it (the
history holds it and the item left the recommendations), as the console's button measures it,
with a ``kapparec stream`` job committing. The ceiling, in the same run: the same kind of event
sent through ``LogEvents`` and read back from the log by a bare consumer, which is what the
broker and client alone take before any feature job can see it.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from console.clients import Clients, ConsoleConfig
from console.users import send_and_wait
from streams.offsets import partitions_for
from streams.topics import EVENTS
from tests.console_stack import start_live_console
from tests.logs import empty_log
from tests.serving_helpers import TOKEN

pytestmark = pytest.mark.bench

ROUNDS = 20


def test_event_to_change_delay_beside_the_logs_own_round_trip(session_stack, tmp_path):
    empty_log(session_stack.bootstrap)
    session_stack.redis().flushall()
    live = start_live_console(session_stack.bootstrap, session_stack.redis_url, tmp_path)
    load_at_start = os.getloadavg()[0]
    try:
        clients = Clients(ConsoleConfig(live.server.address, live.redis_url, live.bootstrap, None, tmp_path / "models",
                                        tmp_path / "experiments.toml", allow_events=True, token=TOKEN))
        delays = [_change_delay_ms(clients, user) for user in _busiest_users(live, ROUNDS)]
        ceiling = _log_round_trips_ms(clients, live.bootstrap, ROUNDS)
    finally:
        live.stop()
    result = {"rounds": ROUNDS, "change_ms": _summary(delays), "log_round_trip_ms": _summary(ceiling),
              "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)]}
    print("\nconsole event-to-change:", json.dumps(result, sort_keys=True))
    assert None not in delays  # every event changed its user's page
    assert len(ceiling) == ROUNDS and min(delays) >= min(ceiling) > 0  # no page changes before its event is in the log


def _busiest_users(live, n: int) -> list[str]:
    counts: dict[str, int] = {}
    for event in live.log.interactions():
        counts[event.user_id] = counts.get(event.user_id, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:n]


def _change_delay_ms(clients: Clients, user: str) -> int | None:
    first = clients.recommend(user, 10, clients.reader().profile(user).get("region", "")).items[0]
    return send_and_wait(clients, user, first.item_id, "complete")


def _log_round_trips_ms(clients: Clients, bootstrap: str, rounds: int) -> list[float]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        assigned = [TopicPartition(EVENTS, p) for p in partitions_for(bootstrap, EVENTS)]
        consumer.assign(assigned)
        consumer.seek_to_end()
        for tp in assigned:
            consumer.position(tp)
        times = []
        for n in range(rounds):
            probe = f"probe{n}"
            started = time.perf_counter()
            clients.log_event(probe, "i1", "complete", "")
            while not any(r.key == probe.encode() for records in consumer.poll(timeout_ms=100).values() for r in records):
                assert time.perf_counter() - started < 10, f"{probe} never reached the log"
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        consumer.close()


def _summary(values: list[float | None]) -> dict:
    measured = sorted(v for v in values if v is not None)
    return {"p50": round(statistics.median(measured), 1), "p95": round(measured[int(0.95 * (len(measured) - 1))], 1),
            "max": round(measured[-1], 1)}
