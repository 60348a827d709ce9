"""``kapparec bench all``: every benchmark, one after another, into one report.

Never two at once: on 2 cores a benchmark running beside another corrupts both figures. The
feature reads at two long logs take longest, so they run last. Each
runs on its own private stack (started and stopped by the benchmark), and the load average is
recorded around each, since the machine may be shared with work this command does not control.

The report directory holds ``report.json`` (the ``figures`` list and every benchmark's whole
result), ``report.md`` (the figures table) and the PNG plots.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kapparec.bench_figures import report_figures
from kapparec.bench_plots import write_plots
from kapparec.bench_publish import report_markdown


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    function: str
    full: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)


STEPS = (
    Step("backfill", "transforms.bench", "backfill_benchmark", {"events": 1_000_000, "dense_events": 200_000},
         {"events": 20_000, "dense_events": 5_000}),
    Step("freshness", "transforms.bench", "freshness_benchmark", {"n": 250, "load_per_s": 2_000.0},
         {"n": 40, "load_per_s": 500.0}),
    Step("serving", "kapparec.serving_bench", "serving_benchmark", {},
         {"items": 2_000, "users": 200, "events": 10_000, "clients": (1, 8), "seconds": 3.0}),
    Step("index", "training.bench", "index_benchmark", {"sizes": (100_000, 1_000_000)},
         {"sizes": (20_000,), "queries": 200}),
    Step("training", "training.train_bench", "training_benchmark", {"epochs": 5},
         {"interactions": 5_000, "users": 2_000, "items": 1_000, "events": 30_000}),
    Step("evaluation", "training.train_bench", "evaluation_benchmark", {},
         {"movielens": None, "synthetic": (1_000, 500, 20_000), "epochs": 1}),
    Step("reads", "featurestore.bench", "reads_benchmark", {"sizes": (1_000_000, 5_000_000), "calls": 1_000},
         {"sizes": (20_000,), "calls": 200}),
)

# Opt-in (``--with-flink``): it needs Flink and Beam's job-server jar, which ``infra up --with-flink`` installs.
FLINK_STEP = Step("flink", "transforms.flink_bench", "flink_benchmark", {}, {"quick": True})


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict:
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")))
    return {"cores": os.cpu_count(), "memory_gib": round(memory_kib / 2**20, 1), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def run_all(quick: bool = False, steps: tuple[Step, ...] = STEPS, sizes: dict[str, dict] | None = None,
            after_each: Callable[[dict], None] | None = None) -> dict:
    """Run ``steps`` in order and return the report. ``sizes`` overrides a step's arguments by name;
    ``after_each`` gets the report so far after every step (``pending`` names the steps still to run).

    A step that fails is recorded with its error and the others still run: an hour's run is not
    thrown away for one benchmark, and the report says which one is missing and why."""
    started_at, load_at_start = datetime.now(timezone.utc), load_average()
    # Every benchmark's code is loaded before the first runs, so the whole report measures one version of it.
    functions = {step.name: getattr(importlib.import_module(step.module), step.function) for step in steps}
    results, runs = {}, {}
    for step in steps:
        arguments = (step.quick if quick else step.full) | (sizes or {}).get(step.name, {})
        print(f"bench all: {step.name} {arguments or '(full size)'}", file=sys.stderr, flush=True)
        load_before, began = load_average(), time.perf_counter()
        run = {"arguments": {key: list(value) if isinstance(value, tuple) else value for key, value in arguments.items()}}
        try:
            results[step.name] = functions[step.name](**arguments)
        except Exception as error:  # noqa: BLE001 - recorded in the report, and the command exits non-zero
            run["error"] = f"{type(error).__name__}: {error}"
            print(f"bench all: {step.name} failed: {run['error']}", file=sys.stderr, flush=True)
        runs[step.name] = run | {"seconds": round(time.perf_counter() - began, 1),
                                 "load_average": {"start": load_before, "end": load_average()}}
        report = {"date": started_at.strftime("%Y-%m-%d"), "started_at": started_at.isoformat(timespec="seconds"),
                  "quick": quick, "machine": machine(), "load_average": {"start": load_at_start, "end": load_average()},
                  "figures": report_figures(results, quick), "runs": runs, "results": results,
                  "pending": [later.name for later in steps if later.name not in runs]}
        if after_each is not None:
            after_each(report)
    return report


def failures(report: dict) -> dict[str, str]:
    return {name: run["error"] for name, run in report["runs"].items() if "error" in run}


def write_report(report: dict, out: Path) -> list[Path]:
    """report.json, report.md and the plots into ``out``; returns the files written. The JSON is
    written first, so a plot that fails to draw loses no figure."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(report, out)
    plots = write_plots(report["results"], out)
    report = report | {"plots": [plot.name for plot in plots]}
    _write_json(report, out)
    (out / "report.md").write_text(report_markdown(report))
    return [out / "report.json", out / "report.md", *plots]


def write_progress(out: Path) -> Callable[[dict], None]:
    """Writes the report so far into ``out`` after each step: a run stopped midway keeps what it measured."""
    def write(report: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(report, out)
    return write


def _write_json(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")


def default_out() -> Path:
    return Path(".run") / "bench" / datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%S")
