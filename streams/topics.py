"""Topic names and the one place topics are created."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from kapparec import settings
from kapparec.errors import KapparecError

EVENTS = "events"  # interactions, keyed by user_id so one user's events stay ordered
ITEMS = "items"  # catalog versions, keyed by item_id
EVENTS_DLQ = "events-dlq"  # records that broke the contract: original bytes + reason header
IMPRESSIONS = "impressions"  # what serving showed, for training negatives and A/B analysis

ALL_TOPICS = (EVENTS, ITEMS, EVENTS_DLQ, IMPRESSIONS)

# Headers a dead-lettered record carries beside its untouched original bytes.
DLQ_REASON_HEADER = "kapparec.reason"
DLQ_SOURCE_HEADER = "kapparec.source"  # "topic/partition@offset" it was read from

# Connecting to a missing broker must fail in seconds, not kafka-python's default minute.
CONNECT_TIMEOUT_MS = 5000

# The catalog is small (thousands of items, a few versions each) and the DLQ is a trickle,
# so neither needs parallelism. One partition each keeps them in one total order: a
# catalog replay sees every version in the order it was written, and an operator reads
# the DLQ top to bottom. Interactions and impressions carry the volume and get the
# configured partition count.
SINGLE_PARTITION_TOPICS = (ITEMS, EVENTS_DLQ)


def unreachable(bootstrap: str) -> KapparecError:
    return KapparecError(
        f"no Kafka broker reachable at {bootstrap} (is `kapparec infra up` running? see --bootstrap)"
    )


def client_timeouts() -> dict[str, int]:
    """kafka-python settings that make every client give up on a dead broker quickly."""
    return {
        "bootstrap_timeout_ms": CONNECT_TIMEOUT_MS,
        "request_timeout_ms": CONNECT_TIMEOUT_MS,
    }


@contextmanager
def admin_client(bootstrap: str) -> Iterator[KafkaAdminClient]:
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kapparec-admin", **client_timeouts())
    except (KafkaConnectionError, KafkaTimeoutError):
        raise unreachable(bootstrap) from None
    try:
        yield admin
    finally:
        admin.close()


def planned_partitions(topic: str, partitions: int) -> int:
    return 1 if topic in SINGLE_PARTITION_TOPICS else partitions


def ensure_topics(bootstrap: str, partitions: int | None = None) -> list[str]:
    """Create whichever of the four topics are missing; return the names created (idempotent)."""
    count = settings.partitions() if partitions is None else partitions
    if count < 1:
        raise KapparecError(f"a topic needs at least one partition, got {count}")
    with admin_client(bootstrap) as admin:
        missing = [topic for topic in ALL_TOPICS if topic not in set(admin.list_topics())]
        if not missing:
            return []
        wanted = {topic: {"num_partitions": planned_partitions(topic, count), "replication_factor": 1}
                  for topic in missing}
        # raise_errors=False: another client racing us to create a topic is not a failure.
        response = admin.create_topics(wanted, raise_errors=False, wait_for_metadata=True)
    return [created["name"] for created in response["topics"] if created["error_code"] == 0]


def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic``; empty if it does not exist."""
    with admin_client(bootstrap) as admin:
        if topic not in admin.list_topics():
            return []
        (described,) = admin.describe_topics([topic])
    return sorted(p["partition_index"] for p in described["partitions"])
