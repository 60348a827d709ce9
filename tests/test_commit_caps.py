"""The continuous job's commits stay under their size cap, which bounds how long one holds Redis
while serving reads it; any cap gives the same store as a replay of the log."""

from __future__ import annotations

from streams.synthetic import SyntheticLog
from tests.faults import dump
from tests.logs import produce_synthetic
from transforms.jobs import backfill, stream

CAP = 1_000


def test_every_commit_of_the_stream_stays_within_its_cap_and_the_store_equals_a_replay(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=80, items=120, events=3_000, seed=11))

    streamed = stream(stack.bootstrap, stack.redis_url, once=True, max_commit_keys=CAP)
    merged, largest = streamed.metrics["mutations_committed"], streamed.metrics["commit_fields_max"]
    assert merged > 5 * CAP  # the log is several caps' worth, so the cap really split it
    assert streamed.batches >= merged // (2 * CAP)
    # The cap is checked after each piece of a fiftieth of the cap in records: a commit passes it
    # by at most one piece's fields, a few per record.
    assert CAP // 2 < largest <= CAP * 1.25, largest
    stream_dump = dump(stack.redis_url)

    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert dump(stack.redis_url, version) == stream_dump
