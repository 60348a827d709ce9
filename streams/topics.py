"""Topic names and the one place topics are created."""

from __future__ import annotations

EVENTS = "events"  # interactions, keyed by user_id so one user's events stay ordered
ITEMS = "items"  # catalog versions, keyed by item_id
EVENTS_DLQ = "events-dlq"  # records that broke the contract: original bytes + reason header
IMPRESSIONS = "impressions"  # what serving showed, for training negatives and A/B analysis

ALL_TOPICS = (EVENTS, ITEMS, EVENTS_DLQ, IMPRESSIONS)

# Headers a dead-lettered record carries beside its untouched original bytes.
DLQ_REASON_HEADER = "kapparec.reason"
DLQ_SOURCE_HEADER = "kapparec.source"  # "topic/partition@offset" it was read from
