"""Serving under a paced load through a promote, a Redis outage and a rollback (``make faults``)."""

from __future__ import annotations

import time

import pytest

from tests.faults import Paced, report, report_recovery
from tests.test_serving import copy_artifacts, recommend, served, wait_for_version  # noqa: F401 - served: a fixture

pytestmark = pytest.mark.faults

# Far below the server's capacity (hundreds a second on this machine), so a failure is the faults' doing.
REQUESTS_PER_S = 50


def test_serving_under_load_through_a_promote_a_redis_outage_and_a_rollback_fails_no_request(served, session_stack):
    production = served.registry.production()
    candidate = served.registry.register(lambda directory: copy_artifacts(production, directory),
                                         metadata={"model": "two_tower"})

    def page(n: int) -> tuple[str, str]:
        response = recommend(served, served.users[n % len(served.users)], k=10)
        assert response.items, "an empty page"
        return response.served_from, response.model_version

    with Paced(REQUESTS_PER_S, page) as load:
        promoted = time.monotonic()
        served.registry.promote(candidate.id)
        wait_for_version(served, candidate.id)
        report_recovery("promote", "the new version served", time.monotonic() - promoted)

        session_stack.redis_service.stop()
        time.sleep(3)
        session_stack.redis_service.start()
        back = time.monotonic()
        report_recovery("redis_outage_under_load", "full pages again",
                        load.seconds_until(back, lambda outcome: outcome.ok and outcome.value[0] == "full"))

        rolled_back = time.monotonic()
        served.registry.rollback()
        wait_for_version(served, production.id)
        report_recovery("rollback", "the old version served", time.monotonic() - rolled_back)
        time.sleep(1)

    assert load.failed == [], load.failed[:5]  # RESOURCE_EXHAUSTED or any other status counts
    answered = [o.value for o in load.outcomes]
    report(f"serving under faults: {len(answered)} requests at {REQUESTS_PER_S}/s, none failed")
    assert {origin for origin, _ in answered} >= {"degraded", "full"}
    assert {version for _, version in answered} >= {production.id, candidate.id}
