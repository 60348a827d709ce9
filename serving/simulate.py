"""``kapparec simulate``: synthetic users with planted tastes drive a live server end to end.

Each simulated user is a user of the synthetic log (``streams/synthetic.py``), whose ground truth
says which categories they like. In a loop, a user asks ``Recommend`` for a page, examines each
position with a probability that falls with the rank (position bias, ``1 / log2(1 + rank)``),
clicks an examined item with a probability set by whether it is to their taste, plays what they
clicked and sometimes finishes it, and sends all of it back through ``LogEvents`` with the page's
request id. The stream job turns those events into features, so the next pages change.

The users' choices are deterministic for a seed: each page's draws come from a generator seeded
by (seed, user, page number). The pages themselves come from the server, so a run is repeatable
exactly as far as the server answers alike.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving.client import bearer, open_channel
from streams.synthetic import SyntheticLog

CLICK_IN_TASTE = 0.5
CLICK_OFF_TASTE = 0.04
COMPLETE_IN_TASTE = 0.6
COMPLETE_OFF_TASTE = 0.1
RPC_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SimulationSettings:
    users: int
    duration_s: float
    server: str
    seed: int = 0
    k: int = 10
    clients: int = 8
    think_s: float = 0.2
    token: str | None = None
    tls_ca: Path | None = None  # TLS against this CA's certificates; None: plaintext
    # The synthetic world the server's log came from (``kapparec produce synthetic``'s defaults).
    world_users: int = 1000
    world_items: int = 500
    world_seed: int = 0


@dataclass
class Tally:
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    useful_pages: int = 0  # pages with at least one click
    errors: Counter = field(default_factory=Counter)
    by_bucket: dict[str, list[int]] = field(default_factory=dict)  # bucket -> [impressions, clicks]

    def page(self, bucket: str, shown: int, clicked: int) -> None:
        self.requests += 1
        self.impressions += shown
        self.clicks += clicked
        self.useful_pages += clicked > 0
        counts = self.by_bucket.setdefault(bucket, [0, 0])
        counts[0] += shown
        counts[1] += clicked

    def summary(self) -> dict:
        return {
            "requests": self.requests, "impressions": self.impressions, "clicks": self.clicks,
            "ctr": self.clicks / self.impressions if self.impressions else None,
            "useful_page_share": self.useful_pages / self.requests if self.requests else None,
            "errors": dict(self.errors),
            "by_bucket": {bucket: {"impressions": i, "clicks": c, "ctr": c / i if i else None}
                          for bucket, (i, c) in sorted(self.by_bucket.items())},
        }


class World:
    """The ground truth: each user's liked categories and region, each item's categories."""

    def __init__(self, settings: SimulationSettings):
        log = SyntheticLog(users=settings.world_users, items=settings.world_items, events=0, seed=settings.world_seed)
        self.item_categories = log.item_categories
        self.users = [log.user_id(n) for n in range(min(settings.users, settings.world_users))]
        self.tastes = {u: set(log.cluster_categories(log.user_cluster(u))) for u in self.users}
        self.regions = {u: log.user_region(u) for u in self.users}

    def likes(self, user_id: str, item_id: str) -> bool:
        return bool(self.tastes[user_id] & set(self.item_categories.get(item_id, ())))


def examined(rank: int) -> float:
    return 1.0 / math.log2(1 + rank)


def page_rng(seed: int, user_id: str, page: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}\x1f{user_id}\x1f{page}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def react(world: World, user_id: str, response: pb.RecommendResponse, rng: random.Random, now_ms: int) -> list[pb.Event]:
    """What the user does with one page: the events they send back (none if they click nothing)."""
    events = []
    for item in response.items:
        liked = world.likes(user_id, item.item_id)
        if rng.random() >= examined(item.rank) * (CLICK_IN_TASTE if liked else CLICK_OFF_TASTE):
            continue
        context = pb.EventContext(region=world.regions[user_id], page="home", position=item.rank,
                                  request_id=response.request_id)
        finished = rng.random() < (COMPLETE_IN_TASTE if liked else COMPLETE_OFF_TASTE)
        for step, event_type in enumerate(("click", "play", "complete")[: 3 if finished else 2]):
            events.append(pb.Event(user_id=user_id, item_id=item.item_id, event_type=event_type,
                                   event_time=now_ms + step, context=context))
    return events


def simulate(settings: SimulationSettings) -> dict:
    """Run the population against ``settings.server`` for ``duration_s``; what the users experienced."""
    world = World(settings)
    tally, lock = Tally(), threading.Lock()
    deadline = time.monotonic() + settings.duration_s
    metadata = bearer(settings.token)

    def client(users: list[str]) -> None:
        with open_channel(settings.server, settings.tls_ca) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            pages = Counter()
            while time.monotonic() < deadline:
                for user_id in users:
                    if time.monotonic() >= deadline:
                        return
                    request = pb.RecommendRequest(user_id=user_id, k=settings.k,
                                                  context=pb.Context(page="home", region=world.regions[user_id]))
                    try:
                        response = stub.Recommend(request, timeout=RPC_TIMEOUT_S)
                        rng = page_rng(settings.seed, user_id, pages[user_id])
                        events = react(world, user_id, response, rng, int(time.time() * 1000))
                        if events:
                            stub.LogEvents(pb.LogEventsRequest(events=events), timeout=RPC_TIMEOUT_S, metadata=metadata)
                    except grpc.RpcError as error:
                        with lock:
                            tally.errors[error.code().name] += 1
                        continue
                    pages[user_id] += 1
                    clicked = len({e.item_id for e in events})
                    with lock:
                        tally.page(response.bucket, len(response.items), clicked)
                    time.sleep(settings.think_s)

    shares = [world.users[n::settings.clients] for n in range(settings.clients)]
    threads = [threading.Thread(target=client, args=(users,), daemon=True) for users in shares if users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(settings.duration_s + 2 * RPC_TIMEOUT_S)
    return {"users": len(world.users), "duration_s": settings.duration_s, "seed": settings.seed, **tally.summary()}
