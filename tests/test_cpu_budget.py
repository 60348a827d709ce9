"""kapparec.cpu_budget against a real process whose busy and idle spells it reports itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kapparec.cpu_budget import CpuBudget

# Spins for 0.8 s of its own CPU, then sleeps 0.8 s, and prints the wall-clock bounds of both spells.
SPELLS = """
import json, time
busy_from = time.time()
spun = time.process_time()
while time.process_time() - spun < 0.8:
    pass
busy_until = time.time()
time.sleep(0.8)
print(json.dumps([busy_from, busy_until, time.time()]))
"""


def test_a_window_counts_only_the_cpu_its_samples_saw():
    with CpuBudget({"spinner": lambda pid, stat, argv: "busy_from" in " ".join(argv)}, interval_s=0.05) as budget:
        ran = subprocess.run([sys.executable, "-c", SPELLS], capture_output=True, text=True, check=True)
    busy_from, busy_until, idle_until = json.loads(ran.stdout)
    busy = budget.cores((busy_from, busy_until))["spinner"]
    idle = budget.cores((busy_until + 0.1, idle_until))["spinner"]
    whole = budget.cores()["spinner"]
    assert busy >= 0.5  # a spinning process: about a core (less on a loaded machine)
    assert idle <= 0.05
    assert idle < whole < busy  # the block averages its busy and idle spells
    assert budget.machine_cores((busy_from, busy_until)) >= busy - 0.05  # the spinner is part of the machine
    assert budget.processes() == {"spinner": 1}


def test_a_window_without_two_samples_is_refused():
    with CpuBudget({"none": lambda pid, stat, argv: False}, interval_s=0.05) as budget:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)"], check=True)
    with pytest.raises(ValueError, match="fewer than two samples"):
        budget.cores((0.0, 1.0))
