"""The evaluation report: JSON for machines, a short markdown table for people (and the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS = ("recall@10", "ndcg@10", "recall@50", "coverage", "fit_s")
REPORT_JSON = "evaluation.json"
REPORT_MD = "evaluation.md"


def markdown_table(report: dict) -> str:
    """One row per model, best recall@10 first."""
    models = sorted(report["models"].items(), key=lambda kv: -(kv[1].get("recall@10") or 0.0))
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, metrics in models:
        cells = ["" if metrics.get(m) is None else f"{metrics[m]:.4f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_line(report: dict) -> str:
    p = report["protocol"]
    return (
        f"{p['split']}: {p['test_users']} test users (>= {p['min_interactions']} positives, last {p['holdout']} held out), "
        f"{p['train_interactions']} training interactions, {p['known_items']} items ranked, training items excluded"
    )


def write_report(report: dict, directory: Path) -> None:
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (directory / REPORT_MD).write_text(f"# Evaluation\n\n{protocol_line(report)}\n\n{markdown_table(report)}\n")
