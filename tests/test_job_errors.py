"""How `kapparec backfill` and `kapparec stream` end when their pipeline fails or they are interrupted,
through the real CLI: one line on stderr and a non-zero exit, never a Beam traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kafka.errors import OffsetOutOfRangeError

from featurestore import layout
from featurestore.redis_store import RedisFeatureStore
from infra.services import ManagedService, free_port, redis_spec
from kapparec.cli import translate
from streams.synthetic import SyntheticLog
from streams.topics import EVENTS
from tests.logs import produce_synthetic
from transforms.jobs import backfill

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
# Many small commits: the job is still committing when the test intervenes.
STREAM_ONCE = [KAPPAREC, "stream", "--once", "--max-batch-records", "40"]


def _env(bootstrap: str, redis_url: str) -> dict[str, str]:
    return {**os.environ, "KAPPAREC_BOOTSTRAP": bootstrap, "KAPPAREC_REDIS_URL": redis_url}


def _wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _events_committed(store: RedisFeatureStore) -> int:
    version = store.current_version()
    return sum(o for (t, _), o in store.offsets(version).items() if t == EVENTS) if version else 0


def _one_line_error(job: subprocess.Popen, *words: str) -> str:
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 1 and stderr.count("\n") == 1 and stderr.startswith("kapparec: error: "), stderr
    assert all(word in stderr for word in words), stderr
    return stderr


def _stream_once_committing(stack) -> tuple[subprocess.Popen, RedisFeatureStore]:
    """`kapparec stream --once` over a log of 3,000 events, once its first commit landed."""
    produce_synthetic(stack.bootstrap, SyntheticLog(users=40, items=50, events=3000, seed=8))
    store = RedisFeatureStore(stack.redis_url)
    job = subprocess.Popen(STREAM_ONCE, env=_env(stack.bootstrap, stack.redis_url), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _events_committed(store) > 0)
    return job, store


def test_a_stream_whose_lease_another_writer_took_ends_in_one_line(stack):
    job, store = _stream_once_committing(stack)
    store.client.set(layout.STREAM_LOCK, "999999@another-host:1")
    _one_line_error(job, "lease", "no longer held")
    assert 0 < _events_committed(store) < 3000


def test_a_stream_whose_offsets_another_writer_moved_ends_in_one_line(stack):
    job, store = _stream_once_committing(stack)
    offsets = layout.offsets_key(store.current_version())
    for field in store.client.hkeys(offsets):
        store.client.hincrby(offsets, field, 1)
    _one_line_error(job, "expected")


def test_a_backfill_whose_redis_went_away_ends_in_one_line(stack, tmp_path):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=40, items=50, events=4000, seed=8))
    own_redis = ManagedService(redis_spec(free_port(), tmp_path), tmp_path)
    own_redis.start()
    try:
        redis_url = f"redis://127.0.0.1:{own_redis.spec.port}/0"
        store = RedisFeatureStore(redis_url)
        job = subprocess.Popen([KAPPAREC, "backfill", "--no-progress"],
                               env=_env(stack.bootstrap, redis_url), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: store.client.exists(layout.VERSIONS))
        own_redis.stop()
        _one_line_error(job, "Redis")
    finally:
        own_redis.stop()


def test_ctrl_c_stops_stream_once_at_a_commit_boundary(stack):
    job, store = _stream_once_committing(stack)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 130 and stderr.count("\n") == 1 and "interrupted" in stderr, stderr
    assert _events_committed(store) < 3000
    assert store.client.get(layout.STREAM_LOCK) is None  # the lease handed back at once
    subprocess.run(STREAM_ONCE, env=_env(stack.bootstrap, stack.redis_url), check=True, capture_output=True, timeout=300)
    resumed = list(store.dump(store.require_current_version()))
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert resumed == list(store.dump(version))  # nothing counted twice


def test_ctrl_c_stops_a_backfill_in_one_line_and_readers_keep_the_current_version(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=40, items=50, events=3000, seed=8))
    current, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    store = RedisFeatureStore(stack.redis_url)
    job = subprocess.Popen([KAPPAREC, "backfill", "--no-progress"], env=_env(stack.bootstrap, stack.redis_url),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(store.versions()) > 1)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 130 and stderr.count("\n") == 1 and "interrupted" in stderr, stderr
    assert store.current_version() == current


def test_offsets_that_retention_deleted_under_a_running_job_are_named_in_one_line():
    """Tansu cannot move a log's start, so the broker's reply is built here; what the CLI prints
    of it is the real ``translate``, as ``main`` calls it."""
    error = translate(OffsetOutOfRangeError("{TopicPartition(topic='events', partition=0): 5}"))
    assert "retention" in str(error) and "events" in str(error) and "\n" not in str(error)
