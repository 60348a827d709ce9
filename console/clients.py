"""The console's connections: the gRPC server, the feature store and the model registry, made once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from featurestore.reader import FeatureReader
from featurestore.redis_store import RedisFeatureStore
from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from modelfiles.registry import ModelRegistry

RPC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ConsoleConfig:
    server: str
    redis_url: str
    bootstrap: str
    metrics_url: str | None
    models_dir: Path
    experiments_file: Path
    allow_events: bool = False
    token: str | None = None


class Clients:
    def __init__(self, config: ConsoleConfig):
        self.config = config
        self.stub = pb_grpc.RecommenderStub(grpc.insecure_channel(config.server))
        self.store = RedisFeatureStore(config.redis_url)
        self.registry = ModelRegistry(config.models_dir)

    def reader(self) -> FeatureReader:
        """A reader of the current feature version: a new one per page, because a backfill may have
        switched the version since the last."""
        return FeatureReader(self.config.redis_url, timeout_s=RPC_TIMEOUT_S)

    def recommend(self, user_id: str, k: int, region: str) -> pb.RecommendResponse:
        """The user's page as serving makes it, marked a preview so that serving logs no impression."""
        request = pb.RecommendRequest(user_id=user_id, k=k, context=pb.Context(page="home", region=region), preview=True)
        return self.stub.Recommend(request, timeout=RPC_TIMEOUT_S)

    def trending(self, region: str, k: int) -> pb.RecommendResponse:
        return self.stub.Trending(pb.TrendingRequest(region=region, k=k), timeout=RPC_TIMEOUT_S)

    def similar(self, item_id: str, k: int) -> pb.RecommendResponse:
        return self.stub.SimilarItems(pb.SimilarItemsRequest(item_id=item_id, k=k), timeout=RPC_TIMEOUT_S)

    def log_event(self, user_id: str, item_id: str, event_type: str, region: str) -> None:
        event = pb.Event(user_id=user_id, item_id=item_id, event_type=event_type, event_time=int(time.time() * 1000),
                         context=pb.EventContext(region=region, device="web"))
        metadata = (("authorization", f"Bearer {self.config.token}"),) if self.config.token else ()
        self.stub.LogEvents(pb.LogEventsRequest(events=[event]), timeout=RPC_TIMEOUT_S, metadata=metadata)
