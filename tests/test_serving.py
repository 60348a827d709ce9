"""The gRPC endpoint, end to end: a real ``kapparec serve`` process, the real broker and Redis, a real model."""

from __future__ import annotations

import dataclasses
import json
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import training  # noqa: F401 - legacy Keras before TensorFlow loads
from featurestore.reader import FeatureReader
from kapparec.v1 import recommender_pb2 as pb
from serving.config import SOURCES
from serving.filters import AGE_SCALE
from serving.server import FEATURES_HEALTH, SERVICE_NAME
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog, send_synthetic
from streams.topics import ensure_topics
from tests.serving_helpers import TOKEN, start_server
from tests.test_two_tower import PARAMS
from training.data import retrieval_positives
from training.registry import ModelRegistry
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


def register(registry: ModelRegistry, model: TwoTowerRecommender, items: list[str], users: list[str]) -> str:
    version = registry.register(lambda d: export_two_tower(model, d, items, users[:50]), metadata={"model": "two_tower"})
    return version.id


@pytest.fixture(scope="module")
def served(session_stack, tmp_path_factory):
    session_stack.broker.stop()
    session_stack.broker.start()
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
    yield Served(server, server.stub(), reader, reader.whole_catalog(), users, registry)
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


@pytest.mark.parametrize("request_fields, fragment", [
    ({"user_id": "u1", "k": 201}, "k must be between 1 and 200"),
    ({"user_id": "u1", "k": -1}, "k must be between"),
    ({"user_id": ""}, "user_id is required"),
    ({"user_id": "x" * 129}, "longer than 128"),
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
