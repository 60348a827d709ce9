"""One writer per store: the stream job's lease, and the fencing check inside every commit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featurestore import layout
from featurestore.definitions import Feature, Mutation, Op
from featurestore.lease import WriterBusy, WriterLease
from featurestore.commit import LeaseLost
from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from streams.topics import EVENTS
from tests.logs import produce_synthetic
from transforms.jobs import backfill

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
PLAY = [Mutation(Op.COUNT, Feature.OCCURRENCE, "", "i1", 2)]


def test_a_writer_that_lost_its_lease_has_its_late_merge_refused(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    paused = WriterLease(stack.redis_url, ttl_s=0.3, holder="paused")
    assert paused.try_acquire()  # and never renewed: as if the process were stopped
    time.sleep(0.5)
    with WriterLease(stack.redis_url, holder="successor").acquire() as successor:
        with pytest.raises(LeaseLost, match="no longer held"):
            store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10}, lease=paused.value)
        assert store.offsets(version) == {} and list(store.dump(version)) == []
        store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10}, lease=successor.value)
        assert int(paused.value.split("@")[0]) < int(successor.value.split("@")[0])  # the fencing token only grows
    assert store.offsets(version) == {(EVENTS, 0): 10}
    assert stack.redis().get(layout.STREAM_LOCK) is None  # released on exit


def test_a_writer_that_lost_its_lease_cannot_advance_the_offsets_of_the_one_that_took_over(stack):
    store = RedisFeatureStore(stack.redis_url)
    version = store.create_version("test")
    paused = WriterLease(stack.redis_url, ttl_s=0.3, holder="paused")
    assert paused.try_acquire()
    time.sleep(0.5)
    with WriterLease(stack.redis_url, holder="successor").acquire() as successor:
        store.commit(version, PLAY, {(EVENTS, 0): None}, {(EVENTS, 0): 10}, lease=successor.value)
        with pytest.raises(LeaseLost, match="no longer held"):  # the paused run's bounded read ended at 15
            store.advance_offsets(version, {(EVENTS, 0): 15, (EVENTS, 1): 3}, lease=paused.value)
    assert store.offsets(version) == {(EVENTS, 0): 10}


def test_the_lease_is_renewed_while_held_and_a_second_writer_is_told_who_holds_it(stack):
    with WriterLease(stack.redis_url, ttl_s=0.6, holder="first").acquire():
        time.sleep(1.5)  # past two terms: the renewer kept it
        with pytest.raises(WriterBusy, match=r"lease \d+@first"):
            WriterLease(stack.redis_url, holder="second").acquire()


def test_a_second_stream_job_exits_naming_the_holder_and_with_wait_takes_over(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=30, items=40, events=600, seed=3))
    env = {**os.environ, "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    first = subprocess.Popen([KAPPAREC, "stream"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while stack.redis().get(layout.STREAM_LOCK) is None:
            assert time.monotonic() < deadline and first.poll() is None, "the first job never took the lease"
            time.sleep(0.1)
        second = subprocess.run([KAPPAREC, "stream", "--once"], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
        assert f":{first.pid})" in second.stderr and "--wait" in second.stderr
        waiting = subprocess.Popen([KAPPAREC, "stream", "--once", "--wait"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert waiting.poll() is None  # still waiting for the lease
        first.terminate()  # a stopped job hands the lease back at once
        assert first.wait(30) == 0
        assert waiting.wait(60) == 0, waiting.stderr.read()
    finally:
        first.kill()
    store = RedisFeatureStore(stack.redis_url)
    streamed = list(store.dump(store.require_current_version()))
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    assert streamed == list(store.dump(version))  # nothing counted twice
