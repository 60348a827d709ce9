"""A version keeps the configuration it was built with, and builds that crashed are collected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from featurestore import layout
from featurestore.redis_store import RedisFeatureStore
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from transforms.config import FeatureConfig
from transforms.jobs import backfill

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))


def test_a_stream_with_other_settings_refuses_to_extend_a_version(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=20, events=300, seed=1))
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    store = RedisFeatureStore(stack.redis_url)
    assert store.versions()[version]["config"] == FeatureConfig().pinned()
    env = {**os.environ, "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    refused = subprocess.run([KAPPAREC, "stream", "--once", "--allowed-lateness-hours", "12"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "allowed_lateness_ms: 21600000 != 43200000" in refused.stderr and "kapparec backfill" in refused.stderr
    same = subprocess.run([KAPPAREC, "stream", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stderr


def test_a_build_that_stopped_beating_is_collected_and_a_live_one_is_kept(stack):
    store = RedisFeatureStore(stack.redis_url)
    crashed, alive = store.create_version("backfill"), store.create_version("backfill")
    meta = {**store.versions()[crashed], "heartbeat_at": int((time.time() - 2 * 3600) * 1000)}
    store.client.hset(layout.VERSIONS, crashed, json.dumps(meta))  # its last beat two hours ago
    store.client.set(f"kr:{crashed}:offsets", "x")  # a key of the crashed build
    assert store.collect_garbage() == [crashed] and set(store.versions()) == {alive}
    assert not list(store.client.scan_iter(match=f"kr:{crashed}:*"))


def test_features_stats_counts_keys_and_bytes_per_feature(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=20, events=300, seed=1))
    version, _ = backfill(stack.bootstrap, stack.redis_url, progress=False)
    env = {**os.environ, "KAPPAREC_REDIS_URL": stack.redis_url}
    shown = subprocess.run([KAPPAREC, "features", "stats", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    stats = json.loads(shown.stdout)
    dumped = list(RedisFeatureStore(stack.redis_url).dump(version))
    assert stats["version"] == version
    assert sum(entry["keys"] for entry in stats["features"].values()) == len(dumped)
    assert stats["features"]["history"]["keys"] == sum(line.startswith("{\"key\":\"history:") for line in dumped)
    assert all(entry["bytes"] > 0 for entry in stats["features"].values())
    unknown = subprocess.run([KAPPAREC, "features", "stats", "--version", "v999"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 2 and "no feature version 'v999'" in unknown.stderr


def test_a_normal_backfill_and_stream_print_no_warnings(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=20, events=300, seed=2))
    env = {**os.environ, "KAPPAREC_BOOTSTRAP": stack.bootstrap, "KAPPAREC_REDIS_URL": stack.redis_url}
    for command in (["backfill"], ["stream", "--once"]):
        done = subprocess.run([KAPPAREC, *command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr
