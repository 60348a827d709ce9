"""A Redis that answers BUSY for a while (another client's long script) ends no background thread,
and serving tells the truth about it: the real Redis made busy, the real jobs and server."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore import layout
from featurestore.commit import StaleBundle
from featurestore.definitions import Feature, Mutation, Op
from featurestore.lease import WriterLease
from featurestore.redis_store import RedisFeatureStore
from kapparec.v1 import recommender_pb2 as pb
from serving.server import FEATURES_HEALTH
from streams.synthetic import SyntheticLog
from tests.busy_redis import busy
from tests.logs import produce_synthetic
from tests.serving_helpers import start_server
from streams.topics import EVENTS
from transforms.jobs import _Heartbeat, _state_kept, backfill, stream


def _wait_for(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_lease_renewer_outlives_a_busy_redis(stack):
    # A term longer than the busy spell (a loaded machine stretches it), which spans a renewal.
    with WriterLease(stack.redis_url, ttl_s=4).acquire() as lease:
        with busy(stack.redis_url):
            time.sleep(1.5)
        time.sleep(4.5)  # past the term: only a renewal since kept the lease
        assert stack.redis().get(layout.STREAM_LOCK).decode() == lease.value and not lease.lost.is_set()


def test_the_build_heartbeat_outlives_a_busy_redis(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("backfill")
    with _Heartbeat(store, version, interval_s=0.1):
        with busy(stack.redis_url):
            time.sleep(0.5)
        beat = store.versions()[version]["heartbeat_at"]
        _wait_for(lambda: store.versions()[version]["heartbeat_at"] > beat, timeout_s=5)


def test_a_commit_that_meets_busy_is_redis_away_not_a_refusal_and_applies_nothing(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    play = [Mutation(Op.COUNT, Feature.OCCURRENCE, "", "i1", 2)]
    with busy(stack.redis_url):
        # A Redis error, which the job waits out, not a refusal, which would end it.
        with pytest.raises(redis.ResponseError, match="^BUSY"):
            store.commit(version, play, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    assert store.offsets(version) == {}  # the merge never ran
    store.commit(version, play, {(EVENTS, 0): None}, {(EVENTS, 0): 10})
    assert store.offsets(version) == {(EVENTS, 0): 10}


def test_a_run_that_fails_while_redis_is_busy_ends_with_its_own_error(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    with busy(stack.redis_url):
        with pytest.raises(StaleBundle):  # not the BUSY met while checking the store for lost state
            with _state_kept(store, version, WriterLease(stack.redis_url, ttl_s=4)):
                raise StaleBundle(f"{version}: a retried bundle")


def test_a_stream_job_outlives_a_busy_redis_idle_or_committing_then_stops_on_request(stack, caplog):
    log = SyntheticLog(users=20, items=30, events=400, seed=6)
    records = list(log.records())
    produce_synthetic(stack.bootstrap, log, records=records[:200])
    stop, committed, failed = threading.Event(), [], []

    def run() -> None:
        try:
            stream(stack.bootstrap, stack.redis_url, stop=stop, lease_ttl_s=4,
                   on_commit=lambda version, records: committed.append(records))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    job = threading.Thread(target=run)
    job.start()
    try:
        _wait_for(lambda: sum(committed) == 200 or failed, timeout_s=120)
        with busy(stack.redis_url):
            time.sleep(1.0)  # the idle job's stop checks, lease renewals and watcher polls all meet BUSY
            produce_synthetic(stack.bootstrap, log, records=records[200:300], catalog=False)
            # The job reads them and meets BUSY where it commits them: its run ends and waits.
            _wait_for(lambda: "event=redis_away" in caplog.text or failed, timeout_s=60)
        _wait_for(lambda: sum(committed) == 300 or failed, timeout_s=60)  # the next run commits them once
        produce_synthetic(stack.bootstrap, log, records=records[300:], catalog=False)
        _wait_for(lambda: sum(committed) == 400 or failed, timeout_s=60)  # the watcher still reports
        time.sleep(4.5)  # past the lease's term: the renewer still renews
        held = stack.redis().get(layout.STREAM_LOCK)
    finally:
        stop.set()
        job.join(60)
    assert not failed and not job.is_alive()
    assert sum(committed) == 400
    assert held is not None and stack.redis().get(layout.STREAM_LOCK) is None  # held to the end, then handed back


def _features_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=FEATURES_HEALTH)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


@pytest.fixture
def served(stack, tmp_path):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=30, items=40, events=800, seed=9))
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    models = tmp_path / "models"
    models.mkdir()
    server = start_server(stack.bootstrap, stack.redis_url, models, tmp_path)
    yield server
    server.stop()


def test_serving_degrades_while_redis_is_busy_and_its_health_says_so_until_it_is_back(stack, served):
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    stub = served.stub()
    assert _features_status(served.address) == serving
    assert stub.Recommend(pb.RecommendRequest(user_id="u1", k=10), timeout=10).served_from == "full"
    with busy(stack.redis_url):
        try:
            busy_page = stub.Recommend(pb.RecommendRequest(user_id="u2", k=10), timeout=10)
        except grpc.RpcError as error:
            pytest.fail(f"a Recommend while Redis was busy failed: {error.code()} {error.details()}")
        _wait_for(lambda: _features_status(served.address) == not_serving, timeout_s=10)
    assert busy_page.served_from == "degraded" and busy_page.items  # from the last good snapshot
    _wait_for(lambda: _features_status(served.address) == serving, timeout_s=10)
    assert stub.Recommend(pb.RecommendRequest(user_id="u3", k=10), timeout=10).served_from == "full"


# Holds Redis's one thread for ARGV[1] microseconds, answering nothing meanwhile: a slow moment,
# shorter than the threshold past which Redis answers other clients BUSY.
_STALL = """local began = redis.call('TIME')
repeat local now = redis.call('TIME') until (now[1] - began[1]) * 1000000 + (now[2] - began[2]) >= tonumber(ARGV[1])"""


def _stalled(redis_url: str, seconds: float) -> threading.Thread:
    stall = threading.Thread(target=lambda: redis.Redis.from_url(redis_url).eval(_STALL, 0, int(seconds * 1e6)))
    stall.start()
    time.sleep(0.1)  # the script holds Redis now
    return stall


def test_one_slow_moment_of_redis_degrades_only_the_requests_it_delays(stack, served):
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    stub = served.stub()
    assert stub.Recommend(pb.RecommendRequest(user_id="u1", k=10), timeout=10).served_from == "full"

    stall = _stalled(stack.redis_url, 0.6)
    delayed = stub.Recommend(pb.RecommendRequest(user_id="u2", k=10), timeout=10)
    stall.join()
    assert delayed.served_from == "degraded" and delayed.items
    assert _features_status(served.address) == serving
    assert stub.Recommend(pb.RecommendRequest(user_id="u3", k=10), timeout=10).served_from == "full"

    # A stall that lasts is an outage: the server degrades (after a spell of timeouts, or when a
    # refresh cannot read the store, whichever comes first) until Redis answers its next check.
    stall = _stalled(stack.redis_url, 3.0)
    pages = []
    while _features_status(served.address) != not_serving:
        assert len(pages) < 60, "the spell of timeouts never degraded the server"
        pages.append(stub.Recommend(pb.RecommendRequest(user_id=f"u{4 + len(pages)}", k=10), timeout=10))
        time.sleep(0.05)  # the health entry follows the server's state every 0.5 s
    stall.join()
    assert len(pages) >= 2 and {page.served_from for page in pages} == {"degraded"}
    _wait_for(lambda: _features_status(served.address) == serving, timeout_s=10)
