"""A user's page: recent history, the page serving would show them (marked a preview), and the
event buttons, which send an event through ``LogEvents`` and wait until the stream job's commit
shows on the page."""

from __future__ import annotations

import time
from dataclasses import dataclass

from console.clients import Clients
from featurestore.reader import HistoryEntry
from kapparec.v1 import recommender_pb2 as pb

HISTORY_SHOWN = 20
RECOMMENDATIONS = 10
# The two events the buttons send: each takes the item off the user's page once committed.
BUTTON_EVENTS = ("complete", "dislike")
CHANGE_TIMEOUT_S = 10.0
POLL_S = 0.05


@dataclass(frozen=True)
class UserPage:
    user_id: str
    region: str
    history: list[HistoryEntry]
    is_new: bool
    recommendations: pb.RecommendResponse


def user_page(clients: Clients, user_id: str) -> UserPage:
    features = clients.reader().user_features(user_id)
    region = features.profile.get("region", "")
    return UserPage(user_id, region, features.history[:HISTORY_SHOWN], features.is_new,
                    clients.recommend(user_id, RECOMMENDATIONS, region))


def send_and_wait(clients: Clients, user_id: str, item_id: str, event_type: str) -> int | None:
    """Send the event, then watch the store and the user's page until both show it: the history
    holds it and the item left the recommendations. Returns the milliseconds from send to that
    change, or None when it did not come within ``CHANGE_TIMEOUT_S`` (no stream job running)."""
    region = clients.reader().profile(user_id).get("region", "")
    sent = time.perf_counter()
    clients.log_event(user_id, item_id, event_type, region)
    while time.perf_counter() - sent < CHANGE_TIMEOUT_S:
        if _page_shows(clients, user_id, item_id, event_type, region):
            return round((time.perf_counter() - sent) * 1000)
        time.sleep(POLL_S)
    return None


def _page_shows(clients: Clients, user_id: str, item_id: str, event_type: str, region: str) -> bool:
    history = clients.reader().history(user_id, HISTORY_SHOWN)
    if not any(e.item_id == item_id and e.event_type == event_type for e in history):
        return False
    return all(item.item_id != item_id for item in clients.recommend(user_id, RECOMMENDATIONS, region).items)
