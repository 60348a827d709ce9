"""Topic names and the one place topics are created."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from kapparec import settings
from kapparec.errors import KapparecError
from kapparec.timeunits import DAY_MS

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


# What a Kappa replay needs of each topic. Retention acts on record timestamps, so the
# timestamp type is pinned with it: the log's own topics keep the producer's time (the
# synthetic and imported logs are stamped in the past, and the features read that time as
# the log clock), which is why ``events`` and ``items`` keep every record whatever its age.
# Dead letters take the broker's append time, so their retention counts from when a record
# was refused, not from the event time it carried.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
# Serving stamps impressions when it shows them. The features keep a day's attribution facts
# 90 days by default (FeatureConfig.attribution_retention_ms), so an experiment's report
# reaches that far back; the log keeps impressions a day longer. A job configured to keep
# the facts longer refuses a topic that keeps less (``replay_hazards``).
IMPRESSIONS_RETENTION_MS = 91 * DAY_MS
DLQ_RETENTION_MS = 30 * DAY_MS

TOPIC_SETTINGS: dict[str, dict[str, str]] = {
    # Every interaction, forever: history, seen items and co-occurrence are functions of all of it.
    EVENTS: {**KEEP_FOREVER, "cleanup.policy": "delete", "message.timestamp.type": "CreateTime"},
    # Compacted: each item's latest version stays replayable, and every catalog feature is a
    # function of that version alone (latest by log position, which compaction keeps).
    ITEMS: {**KEEP_FOREVER, "cleanup.policy": "compact", "message.timestamp.type": "CreateTime"},
    IMPRESSIONS: {"retention.ms": str(IMPRESSIONS_RETENTION_MS), "retention.bytes": "-1",
                  "cleanup.policy": "delete", "message.timestamp.type": "CreateTime"},
    EVENTS_DLQ: {"retention.ms": str(DLQ_RETENTION_MS), "retention.bytes": "-1",
                 "cleanup.policy": "delete", "message.timestamp.type": "LogAppendTime"},
}


def ensure_topics(bootstrap: str, partitions: int | None = None) -> list[str]:
    """Create whichever of the four topics are missing, with the settings a replay needs;
    return the names created (idempotent). Existing topics are left as they are: the
    jobs check them (``replay_hazards``), because a user's cluster is the user's to change."""
    count = settings.partitions() if partitions is None else partitions
    if count < 1:
        raise KapparecError(f"a topic needs at least one partition, got {count}")
    with admin_client(bootstrap) as admin:
        missing = [topic for topic in ALL_TOPICS if topic not in set(admin.list_topics())]
        if not missing:
            return []
        wanted = {topic: {"num_partitions": planned_partitions(topic, count), "replication_factor": 1,
                          "configs": TOPIC_SETTINGS[topic]}
                  for topic in missing}
        # raise_errors=False: another client racing us to create a topic is not a failure.
        response = admin.create_topics(wanted, raise_errors=False, wait_for_metadata=True)
    return [created["name"] for created in response["topics"] if created["error_code"] == 0]


def effective_configs(bootstrap: str, names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Per existing topic, every config in force (the topic's own, else the broker's default)."""
    with admin_client(bootstrap) as admin:
        present = [name for name in names if name in set(admin.list_topics())]
        if not present:
            return {}
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in present],
                                           config_filter="all")
    return {name: {key: entry["value"] for key, entry in configs.items()} for name, configs in described["topic"].items()}


def _hazard(topic: str, config: dict[str, str], attribution_retention_ms: int) -> str | None:
    """Why ``topic``'s settings would make a later replay differ from the stream, or None."""
    policies = set(config.get("cleanup.policy", "delete").split(","))
    if topic == ITEMS and "compact" not in policies:
        return "topic 'items' is not compacted, so old catalog versions expire; set cleanup.policy=compact on it"
    if topic == EVENTS and "compact" in policies:
        return "topic 'events' is compacted, which drops a user's earlier events; set cleanup.policy=delete on it"
    if "delete" not in policies:
        return None
    retention_bytes, retention_ms = int(config.get("retention.bytes", "-1")), int(config.get("retention.ms", "-1"))
    if retention_bytes != -1:
        return f"topic {topic!r} deletes history by size (retention.bytes={retention_bytes}); set retention.bytes=-1 on it"
    needed_ms = attribution_retention_ms if topic == IMPRESSIONS else -1  # -1: every record, forever
    if retention_ms != -1 and (needed_ms == -1 or retention_ms < needed_ms):
        wanted = "-1" if needed_ms == -1 else f"-1 or at least {needed_ms}"
        return f"topic {topic!r} deletes history (retention.ms={retention_ms}); set retention.ms={wanted} on it"
    return None


def replay_hazards(bootstrap: str, attribution_retention_ms: int) -> list[str]:
    """Each setting of the log's topics under which a replay would lose records the stream saw."""
    configs = effective_configs(bootstrap, (EVENTS, ITEMS, IMPRESSIONS))
    return [hazard for topic, config in configs.items() if (hazard := _hazard(topic, config, attribution_retention_ms))]


def refuse_lossy_retention(bootstrap: str, attribution_retention_ms: int, accepted: bool) -> None:
    """Stop a job whose log would delete history, unless the user accepted that retention."""
    hazards = replay_hazards(bootstrap, attribution_retention_ms)
    if hazards and not accepted:
        raise KapparecError(f"{hazards[0]}, or pass --accept-log-retention to replay what is left")


def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic``; empty if it does not exist."""
    with admin_client(bootstrap) as admin:
        if topic not in admin.list_topics():
            return []
        (described,) = admin.describe_topics([topic])
    return sorted(p["partition_index"] for p in described["partitions"])
