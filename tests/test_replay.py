"""training.replay: the log replayed through ReadFromKafka on the real test broker."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from kapparec.errors import KapparecError
from streams.schema import CatalogEvent, InteractionEvent, encode
from streams.topics import EVENTS, ITEMS, ensure_topics
from training.replay import replay_log

BASE_MS = 1_700_000_000_000
EVENT_COUNT = 300


def interaction(k: int) -> InteractionEvent:
    kind = ("view", "click", "rate")[k % 3]
    return InteractionEvent(
        user_id=f"u{k % 17}",
        item_id=f"i{k % 41}",
        event_type=kind,
        value=float(k % 5) if kind == "rate" else None,
        event_time=BASE_MS + (k * 7919) % 100_000,  # event time out of log order
        context={"region": "eu", "device": "tv"} if k % 2 else {},
    )


def publish(bootstrap: str) -> list[tuple]:
    """Produces the events, two catalog versions of one item and one bad record; returns the events as rows."""
    ensure_topics(bootstrap, partitions=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        sent = [(event, producer.send(EVENTS, key=event.user_id.encode(), value=encode(event)))
                for event in map(interaction, range(EVENT_COUNT))]
        producer.send(EVENTS, key=b"u0", value=b"{not json")
        for title, year in (("Old title", None), ("New title", 1995)):
            producer.send(ITEMS, key=b"i1", value=encode(CatalogEvent(item_id="i1", title=title, categories=("drama",),
                                                                      created_at=5, release_year=year)))
        producer.send(ITEMS, key=b"i2", value=encode(CatalogEvent(item_id="i2", title="Second", created_at=6)))
        producer.flush()
        return [
            (e.user_id, e.item_id, e.event_type.value, e.value, e.event_time, e.context.region or "", e.context.device or "",
             meta.partition, meta.offset)
            for e, meta in ((event, future.get()) for event, future in sent)
        ]
    finally:
        producer.close()


def rows_of(interactions) -> list[tuple]:
    return list(zip(interactions.user_ids, interactions.item_ids, interactions.event_types,
                    [None if v != v else v for v in interactions.values], interactions.event_times,
                    interactions.regions, interactions.devices))


def test_replay_reads_every_interaction_and_the_latest_catalog(stack):
    produced = publish(stack.bootstrap)
    interactions, catalog, metadata = replay_log(stack.bootstrap)

    expected = sorted(produced, key=lambda r: (r[4], r[7], r[8]))  # (event_time, partition, offset)
    assert rows_of(interactions) == [r[:7] for r in expected]
    assert catalog.item_ids == ["i1", "i2"] and catalog.titles["i1"] == "New title"
    assert catalog.categories["i1"] == ("drama",)
    assert catalog.release_years == {"i1": 1995}  # i2's record gives no year
    ends = {p: 1 + max(r[8] for r in produced if r[7] == p) for p in (0, 1)}
    ends[produced[0][7]] += 1  # the bad record went last, to u0's partition
    assert metadata["offsets"][EVENTS] == {p: [0, end] for p, end in ends.items()}
    assert metadata["offsets"][ITEMS] == {0: [0, 3]}
    assert metadata["dead_letters"] == 1
    assert metadata["interactions"] == EVENT_COUNT and metadata["catalog_items"] == 2
    assert metadata["cutoff_ms"] == max(r[4] for r in produced) + 1


def test_replay_stops_at_offsets_and_at_an_event_time(stack):
    produced = publish(stack.bootstrap)
    cutoff = BASE_MS + 50_000
    interactions, _, metadata = replay_log(stack.bootstrap, until_offsets={0: 40}, until_event_time_ms=cutoff)

    kept = [r for r in produced if (r[7] != 0 or r[8] < 40) and r[4] < cutoff]
    assert rows_of(interactions) == [r[:7] for r in sorted(kept, key=lambda r: (r[4], r[7], r[8]))]
    assert metadata["offsets"][EVENTS][0] == [0, 40]
    assert metadata["cutoff_ms"] == cutoff and metadata["until_event_time_ms"] == cutoff


def test_an_empty_log_is_a_clear_error(stack):
    with pytest.raises(KapparecError, match="the log is empty"):
        replay_log(stack.bootstrap)  # no topics at all
    ensure_topics(stack.bootstrap, partitions=2)
    with pytest.raises(KapparecError, match="the log is empty"):
        replay_log(stack.bootstrap)  # topics, but nothing in them


def test_offsets_outside_the_log_and_an_empty_cut_are_refused(stack):
    publish(stack.bootstrap)
    with pytest.raises(KapparecError, match=f"no interactions in the replayed offset ranges before event time {BASE_MS}"):
        replay_log(stack.bootstrap, until_event_time_ms=BASE_MS)
    with pytest.raises(KapparecError, match="no partition"):
        replay_log(stack.bootstrap, until_offsets={9: 1})
    with pytest.raises(KapparecError, match="beyond the log end"):
        replay_log(stack.bootstrap, until_offsets={0: 10_000})
