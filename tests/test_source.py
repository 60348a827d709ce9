"""ReadFromKafka against the real test broker: exact ranges, positions, watermarks, dead letters, follow mode."""

from __future__ import annotations

import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.sdf_utils import (
    RestrictionTrackerView,
    ThreadsafeRestrictionTracker,
    ThreadsafeWatermarkEstimator,
)
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from kafka import KafkaProducer

from kapparec.errors import KapparecError, UsageError
from streams import dlq, partition_read
from streams.schema import (
    MAX_FUTURE_SKEW_MS,
    MAX_RECORD_BYTES,
    CatalogEvent,
    Interaction,
    InteractionEvent,
    encode,
    parse_catalog,
    parse_interaction,
)
from streams.partition_read import DEAD_LETTER, DEFAULT_CONSUMER_CONFIG, RECORDS, FollowPartitionFn
from streams.read_plan import NO_EVENT_TIME, UNBOUNDED, PartitionRead
from streams.restriction import RESTRICTIONS, LogRestriction, LogRestrictionTracker
from streams.source import ReadFromKafka
from streams.watermark import IDLE_WATERMARK_LAG_S
from streams.topics import EVENTS, EVENTS_DLQ, ITEMS
from tests.logs import create_topic, produce

BASE_MS = 1_700_000_000_000


def event(user: str, event_time: int, item: str = "i1", kind: str = "view") -> bytes:
    return encode(InteractionEvent(user_id=user, item_id=item, event_type=kind, event_time=event_time))


def run(build) -> dict[str, int]:
    """Runs the pipeline ``build(pipeline)`` makes and returns the source's counters."""
    pipeline = beam.Pipeline(runner="DirectRunner")
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(partition_read.METRICS_NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in counters}


def with_timestamp(pcoll):
    return pcoll | beam.Map(lambda value, ts=beam.DoFn.TimestampParam: (value, ts.micros // 1000))


def expected_interaction(raw: bytes, meta, log_watermark: int):
    return parse_interaction(raw, partition=meta.partition, offset=meta.offset)._replace(log_watermark=log_watermark)


def test_bounded_read_returns_every_valid_record_at_its_position(stack):
    create_topic(stack.bootstrap, EVENTS, 3)
    sent = [(p, f"u{p}".encode(), event(f"u{p}", BASE_MS + i)) for i in range(6) for p in range(3)]
    metas = produce(stack.bootstrap, EVENTS, sent)
    # Event times rise within every partition, so each record's log watermark is its predecessor's event time.
    expected = []
    for k, ((_, _, raw), meta) in enumerate(zip(sent, metas)):
        i = k // 3  # the record's rank within its partition
        expected.append((expected_interaction(raw, meta, BASE_MS + i - 1 if i else NO_EVENT_TIME), BASE_MS + i))

    def build(p):
        read = p | ReadFromKafka(stack.bootstrap, EVENTS)
        assert_that(with_timestamp(read[RECORDS]), equal_to(expected), label="records")
        assert_that(read[DEAD_LETTER], equal_to([]), label="no dead letters")

    assert run(build) == {"records_read": 18, "valid": 18, "dead_lettered": 0}


def test_sub_range_reads_only_that_range_and_starts_from_the_given_high_water(stack):
    create_topic(stack.bootstrap, EVENTS, 2)
    times = [100, 50, 300, 200, 250, 400]
    sent = [(0, b"u", event("u", BASE_MS + t)) for t in times] + [(1, b"v", event("v", BASE_MS))]
    metas = produce(stack.bootstrap, EVENTS, sent)
    # Offsets [2, 5) of partition 0, after a previous batch whose high water was BASE_MS + 120.
    watermarks = [BASE_MS + 120, BASE_MS + 300, BASE_MS + 300]
    expected = [expected_interaction(sent[o][2], metas[o], wm) for o, wm in zip(range(2, 5), watermarks)]

    def build(p):
        read = p | ReadFromKafka(stack.bootstrap, EVENTS, ranges={0: (2, 5)}, start_high_water={0: BASE_MS + 120})
        assert_that(read[RECORDS], equal_to(expected))

    assert run(build)["records_read"] == 3


def test_batched_read_gives_the_same_records_as_lists_in_log_order(stack):
    """batched=True: one list per fetched batch of a partition, in log order, holding exactly
    the per-record read's records (positions, log watermarks, a stop inside the batch), each
    with its dead letters."""
    create_topic(stack.bootstrap, EVENTS, 2)
    times = [100, 50, 300, 200, 250, 400]
    sent = [(0, b"u", event("u", BASE_MS + t)) for t in times] + [(0, b"u", b"broken")] * 2
    sent += [(1, b"v", event("v", BASE_MS + t)) for t in times]
    metas = produce(stack.bootstrap, EVENTS, sent)
    ranges = {0: (1, 7), 1: (0, 6)}  # partition 0 stops inside its batch, before the second broken record
    watermarks = {0: [BASE_MS, BASE_MS + 50, BASE_MS + 300, BASE_MS + 300, BASE_MS + 300],  # offsets 1..5
                  1: [NO_EVENT_TIME, BASE_MS + 100, BASE_MS + 100, BASE_MS + 300, BASE_MS + 300, BASE_MS + 300]}
    expected = [expected_interaction(sent[1 + k][2], metas[1 + k], wm) for k, wm in enumerate(watermarks[0])]
    expected += [expected_interaction(sent[8 + k][2], metas[8 + k], wm) for k, wm in enumerate(watermarks[1])]

    def build(p):
        read = p | ReadFromKafka(stack.bootstrap, EVENTS, ranges=ranges, start_high_water={0: BASE_MS}, batched=True)
        in_order = read[RECORDS] | beam.Map(lambda batch: [r.offset for r in batch] == sorted(r.offset for r in batch))
        assert_that(in_order | beam.Distinct(), equal_to([True]), label="log order")
        assert_that(read[RECORDS] | beam.FlatMap(lambda batch: batch), equal_to(expected), label="records")
        letters = read[RECORDS] | beam.FlatMap(lambda batch: [(letter.partition, letter.offset) for letter in batch.letters])
        assert_that(letters, equal_to([(0, 6)]), label="dead letters, each in its batch")

    assert run(build) == {"records_read": 12, "valid": 11, "dead_lettered": 1}


def test_log_watermark_ignores_invalid_records_and_reorders_nothing(stack):
    create_topic(stack.bootstrap, EVENTS, 1)
    sent = [
        (0, b"u", event("u", BASE_MS + 100)),
        (0, b"u", event("u", BASE_MS + 50)),  # late: the watermark stays at 100
        (0, b"u", event("u", BASE_MS + 10**6).replace(b'"view"', b'"nope"')),  # invalid: must not move it
        (0, b"u", event("u", BASE_MS + 70)),
    ]
    metas = produce(stack.bootstrap, EVENTS, sent)
    expected = [
        expected_interaction(sent[0][2], metas[0], NO_EVENT_TIME),
        expected_interaction(sent[1][2], metas[1], BASE_MS + 100),
        expected_interaction(sent[3][2], metas[3], BASE_MS + 100),
    ]

    def build(p):
        assert_that((p | ReadFromKafka(stack.bootstrap, EVENTS))[RECORDS], equal_to(expected))

    run(build)


def malformed_records() -> dict[str, bytes]:
    """One record per way to break the contract, keyed by the reason prefix expected for it."""
    valid = {"user_id": "u", "item_id": "i", "event_type": "view", "event_time": BASE_MS}
    as_json = lambda **change: InteractionEvent.model_validate({**valid, **change}).model_dump_json()  # noqa: E731
    return {
        "bad_json": b'{"user_id": "u", ',
        "missing": b'{"user_id": "u", "event_type": "view", "event_time": 1}',
        "string_type": b'{"user_id": 7, "item_id": "i", "event_type": "view", "event_time": 1}',
        "enum": as_json().replace('"view"', '"teleport"').encode(),
        "oversized": b'{"pad": "' + b"x" * MAX_RECORD_BYTES + b'"}',
        "future_event_time": as_json(event_time=int(time.time() * 1000) + 2 * MAX_FUTURE_SKEW_MS).encode(),
        "not utf-8": b"\xff\xfe\x00garbage",
    }


def test_malformed_records_go_to_the_dlq_with_reason_and_original_bytes(stack):
    create_topic(stack.bootstrap, EVENTS, 2)
    create_topic(stack.bootstrap, EVENTS_DLQ, 1)
    bad = malformed_records()
    sent = [(i % 2, f"k{i}".encode(), raw) for i, raw in enumerate(bad.values())]
    sent += [(0, b"good", event("good", BASE_MS)), (1, None, event("good", BASE_MS + 1))]
    metas = produce(stack.bootstrap, EVENTS, sent)

    def build(p):
        read = p | ReadFromKafka(stack.bootstrap, EVENTS)
        read[DEAD_LETTER] | dlq.WriteDeadLetters(stack.bootstrap, stack.redis_url)
        assert_that(read[RECORDS] | beam.Map(lambda r: r.user_id), equal_to(["good", "good"]))

    counters = run(build)
    assert counters == {"records_read": len(sent), "valid": 2, "dead_lettered": len(bad)}
    letters = sorted(dlq.read_dead_letters(stack.bootstrap), key=lambda d: (d.partition, d.offset))
    by_raw = {letter.raw: letter for letter in letters}
    assert len(letters) == len(bad)
    for (reason_hint, raw), (partition, key, _), meta in zip(bad.items(), sent, metas):
        letter = by_raw[raw]
        assert (letter.key, letter.topic, letter.partition, letter.offset) == (key, EVENTS, partition, meta.offset)
        if reason_hint != "not utf-8":
            assert reason_hint in letter.reason, letter.reason
        assert letter.reason


def test_catalog_records_parse_and_carry_their_log_time(stack):
    create_topic(stack.bootstrap, ITEMS, 1)
    item = CatalogEvent(item_id="m1", title="Heat", categories=("Action",), created_at=1)
    sent = [(0, b"m1", encode(item)), (0, b"m2", b"{}")]
    metas = produce(stack.bootstrap, ITEMS, sent)
    expected = [(parse_catalog(sent[0][2], partition=0, offset=metas[0].offset), metas[0].timestamp)]

    def build(p):
        read = p | ReadFromKafka(stack.bootstrap, ITEMS, parse_catalog)
        assert_that(with_timestamp(read[RECORDS]), equal_to(expected), label="records")
        assert_that(read[DEAD_LETTER] | beam.Map(lambda d: (d.offset, d.raw)), equal_to([(1, b"{}")]), label="dead")

    assert run(build)["dead_lettered"] == 1


def test_read_finishes_when_the_range_ends_in_an_offset_gap(stack):
    create_topic(stack.bootstrap, EVENTS, 1)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, transactional_id="gap-test")
    producer.init_transactions()
    producer.begin_transaction()
    for t in range(3):
        producer.send(EVENTS, value=event("u", BASE_MS + t), key=b"u", partition=0)
    producer.commit_transaction()  # the commit marker takes offset 3: a hole at the end of the log
    producer.close()
    read = ReadFromKafka(stack.bootstrap, EVENTS)
    assert [(r.start, r.stop) for r in read.reads] == [(0, 4)]

    def build(p):
        assert_that((p | read)[RECORDS] | beam.Map(lambda r: r.offset), equal_to([0, 1, 2]))

    assert run(build)["records_read"] == 3


def test_bounded_ranges_are_checked_against_the_log(stack):
    create_topic(stack.bootstrap, EVENTS, 2)
    produce(stack.bootstrap, EVENTS, [(0, b"u", event("u", BASE_MS))] * 3)
    with pytest.raises(KapparecError, match="beyond the log end 3"):
        ReadFromKafka(stack.bootstrap, EVENTS, ranges={0: (0, 4)})
    with pytest.raises(KapparecError, match="no partition"):
        ReadFromKafka(stack.bootstrap, EVENTS, ranges={7: (0, 0)})
    with pytest.raises(KapparecError, match="backwards"):
        ReadFromKafka(stack.bootstrap, EVENTS, ranges={0: (2, 1)})
    with pytest.raises(KapparecError, match="does not exist"):
        ReadFromKafka(stack.bootstrap, "no-such-topic")
    with pytest.raises(UsageError):
        ReadFromKafka(stack.bootstrap, EVENTS, ranges={0: (0, 1)}, follow=True)


def test_tracker_splits_only_at_checkpoints_and_keeps_the_high_water():
    tracker = LogRestrictionTracker(LogRestriction(10, 20, 5))
    assert tracker.try_claim((10, 50)) and tracker.try_claim((12, 30))
    assert tracker.try_split(0.5) is None
    assert tracker.try_split(0) == (LogRestriction(10, 13, 5), LogRestriction(13, 20, 50))
    assert not tracker.try_claim((13, 60))
    tracker.check_done()


def test_tracker_refuses_backward_claims():
    tracker = LogRestrictionTracker(LogRestriction(0, 5, -1))
    assert tracker.try_claim((3, 1))
    with pytest.raises(ValueError, match="claims must move forward"):
        tracker.try_claim((2, 1))


def test_tracker_refuses_to_finish_with_unread_offsets():
    tracker = LogRestrictionTracker(LogRestriction(0, 5, -1))
    tracker.try_claim((2, 1))
    with pytest.raises(ValueError, match=r"\[3, 5\)"):
        tracker.check_done()
    assert not tracker.try_claim((5, NO_EVENT_TIME))  # the read proved the log reached the stop
    tracker.check_done()


def test_restriction_coder_round_trips_unbounded_and_empty_high_water():
    coder = RESTRICTIONS.restriction_coder()
    for restriction in (LogRestriction(0, UNBOUNDED, NO_EVENT_TIME), LogRestriction(7, 9, BASE_MS)):
        assert coder.decode(coder.encode(restriction)) == restriction


def unwrap(output):
    """The record inside a (possibly tagged) timestamped output."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        output = output.value
    return output.value


class FollowHarness:
    """Drives the follow-mode DoFn the way the local runner does: each resume a bundle of its own,
    one process() call per restriction."""

    def __init__(self, bootstrap: str, idle_timeout_s: float, topic: str = EVENTS, parse=parse_interaction):
        # A poll ends as soon as records come; its timeout bounds only a fetch that finds none, and
        # a new consumer's first fetch (leader look-up, fetch session) can take longer than 200 ms on Kafka.
        self.fn = FollowPartitionFn(bootstrap, {topic: parse}, DEFAULT_CONSUMER_CONFIG, 2000, idle_timeout_s)
        self.fn.setup()
        self.element = PartitionRead(topic, 0, 0, UNBOUNDED)
        self.restriction = RESTRICTIONS.initial_restriction(self.element)
        self.estimator_state = self.fn.initial_estimator_state(self.element, self.restriction)

    def resume(self):
        """One process() call: returns its outputs, its residual restriction and its watermark estimator."""
        tracker = ThreadsafeRestrictionTracker(RESTRICTIONS.create_tracker(self.restriction))
        estimator = ThreadsafeWatermarkEstimator(self.fn.create_watermark_estimator(self.estimator_state))
        view = RestrictionTrackerView(tracker)
        self.fn.start_bundle()
        outputs = list(self.fn.process(self.element, window=GlobalWindow(), tracker=view, watermark=estimator))
        tracker.check_done()
        residual, _delay = tracker.deferred_status()
        self.restriction, self.estimator_state = residual, estimator.get_estimator_state()
        return [unwrap(o) for o in outputs], residual, estimator

    def close(self):
        self.fn.teardown()


def test_follow_mode_claims_defers_when_idle_and_resumes_from_the_residual(stack):
    create_topic(stack.bootstrap, EVENTS, 1)
    produce(stack.bootstrap, EVENTS, [(0, b"u", event("u", BASE_MS + t)) for t in (10, 30, 20)])
    harness = FollowHarness(stack.bootstrap, idle_timeout_s=0.3)
    try:
        first, residual, estimator = harness.resume()
        assert [(r.offset, r.log_watermark) for r in first] == [(0, -1), (1, BASE_MS + 10), (2, BASE_MS + 30)]
        assert residual == LogRestriction(3, UNBOUNDED, BASE_MS + 30)
        assert estimator.current_watermark() == Timestamp(micros=(BASE_MS + 30) * 1000)

        empty, residual, _ = harness.resume()  # nothing new: defers again without claiming
        assert empty == [] and residual == LogRestriction(3, UNBOUNDED, BASE_MS + 30)

        produce(stack.bootstrap, EVENTS, [(0, b"u", event("u", BASE_MS + 25)), (0, b"u", b"broken")])
        second, residual, estimator = harness.resume()
        assert [(r.offset, r.log_watermark) for r in second if isinstance(r, Interaction)] == [(3, BASE_MS + 30)]
        assert [d.offset for d in second if isinstance(d, dlq.DeadLetter)] == [4]
        assert residual == LogRestriction(5, UNBOUNDED, BASE_MS + 30)

        time.sleep(0.5)  # longer than the idle timeout: the watermark falls back to the wall clock
        assert estimator.current_watermark() > Timestamp.now() - IDLE_WATERMARK_LAG_S - 1
    finally:
        harness.close()


def test_follow_mode_starts_from_committed_offsets(stack):
    create_topic(stack.bootstrap, EVENTS, 2)
    produce(stack.bootstrap, EVENTS, [(0, b"u", event("u", BASE_MS))] * 4)
    read = ReadFromKafka(stack.bootstrap, EVENTS, follow=True, start_offsets={0: 3}, start_high_water={0: BASE_MS})
    assert read.reads == [PartitionRead(EVENTS, 0, 3, UNBOUNDED, BASE_MS)]
    everything = ReadFromKafka(stack.bootstrap, EVENTS, follow=True)
    assert [(r.partition, r.start, r.stop) for r in everything.reads] == [(0, 0, UNBOUNDED), (1, 0, UNBOUNDED)]


def test_follow_mode_times_catalog_records_by_their_log_time(stack):
    create_topic(stack.bootstrap, ITEMS, 1)
    item = CatalogEvent(item_id="m1", title="Heat", created_at=1)
    metas = produce(stack.bootstrap, ITEMS, [(0, b"m1", encode(item)), (0, b"m1", encode(item))])
    harness = FollowHarness(stack.bootstrap, idle_timeout_s=60, topic=ITEMS, parse=parse_catalog)
    try:
        entries, residual, estimator = harness.resume()
        assert [e.offset for e in entries] == [0, 1]
        assert residual == LogRestriction(2, UNBOUNDED, metas[1].timestamp)
        assert estimator.current_watermark() == Timestamp(micros=metas[1].timestamp * 1000)
    finally:
        harness.close()


def test_follow_mode_output_is_unbounded_and_bounded_output_is_not(stack):
    create_topic(stack.bootstrap, EVENTS, 1)
    pipeline = beam.Pipeline(runner="DirectRunner")
    followed = pipeline | "Follow" >> ReadFromKafka(stack.bootstrap, EVENTS, follow=True)
    replayed = pipeline | "Replay" >> ReadFromKafka(stack.bootstrap, EVENTS)
    assert (followed[RECORDS].is_bounded, replayed[RECORDS].is_bounded) == (False, True)
