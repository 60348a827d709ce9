"""The CLI error contract: bad usage is one line on stderr and exit 2, never a traceback or usage dump.

Runs the installed console script in a subprocess, the way users and scripts meet it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KAPPAREC = Path(sys.executable).with_name("kapparec")


def kapparec(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KAPPAREC), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["no-such-verb"], id="bad verb"),
        pytest.param([], id="no verb"),
        pytest.param(["--no-such-flag"], id="bad top-level flag"),
        pytest.param(["infra"], id="missing infra action"),
        pytest.param(["infra", "status", "--no-such-flag"], id="bad flag"),
        pytest.param(["infra", "up", "--broker-port", "not-a-number"], id="bad flag value"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv: list[str]):
    result = kapparec(*argv)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("kapparec: error: ")
    assert result.stdout == ""


def test_bad_port_env_var_is_one_line_and_exit_2(tmp_path: Path):
    result = kapparec("infra", "status", KAPPAREC_RUN_DIR=str(tmp_path), KAPPAREC_BROKER_PORT="abc")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == "kapparec: error: KAPPAREC_BROKER_PORT must be an integer, got 'abc'\n"


def test_help_lists_the_infra_verb_and_exits_0():
    result = kapparec("--help")

    assert result.returncode == 0
    assert "infra" in result.stdout
