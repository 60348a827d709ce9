"""``kapparec demo`` end to end, on a stack of its own (its own run directory and free ports).

A first run is left running; a second run reuses its stack, stream job and server, reports
its own live events and experiment, and with ``--once`` stops everything.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.services import free_port, pid_alive

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))
SMALL_WORLD = ["--users", "300", "--items", "150", "--events", "6000", "--epochs", "1", "--experiment-seconds", "10"]
APPS = ("stream", "serve", "console")


@pytest.fixture
def demo_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KAPPAREC_BOOTSTRAP", "KAPPAREC_REDIS_URL")}
    env.update(KAPPAREC_RUN_DIR=str(tmp_path / "run"), KAPPAREC_MODELS_DIR=str(tmp_path / "models"),
               KAPPAREC_BROKER_PORT=str(free_port()), KAPPAREC_REDIS_PORT=str(free_port()))
    yield env
    subprocess.run([KAPPAREC, "infra", "down"], env=env, capture_output=True, timeout=180)


def demo(env: dict, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([KAPPAREC, "demo", *SMALL_WORLD, *flags], env=env, capture_output=True, text=True, timeout=900)


def app_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(rf"^({'|'.join(APPS)}): .*, pid (\d+) ", output, re.MULTILINE)}


def assert_live_change_shown(output: str) -> None:
    assert re.search(r"^\S+'s page changed [\d,]+ ms after LogEvents returned:$", output, re.MULTILINE), output
    assert re.search(r"^trending \(region \w+\) changed [\d,]+ ms after LogEvents returned:$", output, re.MULTILINE)
    assert re.search(r"^  \(\* \S+: completed, so no longer recommended\)$", output, re.MULTILINE)
    moved = re.search(r"^  \(\* \S+: rank (\d+|-) -> (\d+)\)$", output, re.MULTILINE)
    assert moved and (moved[1] == "-" or int(moved[2]) < int(moved[1])), output


def test_demo_runs_the_loop_then_a_second_run_reuses_it_and_once_stops_everything(demo_env):
    first = demo(demo_env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for role in ("heavy", "light", "brand-new"):
        assert re.search(rf"^{role} user \S+$", out, re.MULTILINE), out
    assert "Because you watched" in out  # explained personal pages
    assert re.search(r"two_tower\s+Because you watched", out)  # the promoted model serves
    assert "Trending now" in out  # the brand-new user's page
    assert_live_change_shown(out)
    assert re.search(r"^experiment demo_\d{6} \(control: popular\)$", out, re.MULTILINE)
    assert re.search(r"^  model\s+\d+\s+\d+", out, re.MULTILINE) and re.search(r"^  popular\s+\d+\s+\d+", out, re.MULTILINE)
    pids = app_pids(out)
    assert sorted(pids) == sorted(APPS) and all(pid_alive(pid) for pid in pids.values()), "left running"

    second = demo(demo_env, "--once")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = second.stdout
    assert "the log already holds events: reusing it" in again
    assert "keeps the features fresh: no backfill needed" in again and "reusing it (`kapparec train` retrains)" in again
    assert app_pids(again) == pids and again.count("already running, reused") == len(APPS)
    assert_live_change_shown(again)
    own_experiment = re.findall(r"^experiment (demo_\d{6})", again, re.MULTILINE)
    assert len(own_experiment) == 1 and own_experiment != re.findall(r"^experiment (demo_\d{6})", out, re.MULTILINE)
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list(Path(demo_env["KAPPAREC_RUN_DIR"]).glob("*.pid")), "--once leaves no process recorded"


def test_a_failing_step_prints_one_line_naming_it(demo_env):
    with socket.create_server(("127.0.0.1", int(demo_env["KAPPAREC_BROKER_PORT"]))):  # a port someone else holds
        failed = demo(demo_env, "--once")
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("kapparec: error: demo step 1 (bring the local stack up) failed: `kapparec infra up` exited with 1")
    assert "kapparec infra status" in last and "Traceback" not in failed.stderr
