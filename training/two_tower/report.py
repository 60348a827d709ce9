"""The evaluation report: JSON for machines, a short markdown table for people (and the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS = ("recall@10", "ndcg@10", "recall@50", "coverage", "fit_s")
REPORT_JSON = "evaluation.json"
REPORT_MD = "evaluation.md"


def table_rows(report: dict) -> list[tuple[str, list[str]]]:
    """(model, its ``METRICS`` formatted) per model, best recall@10 first: the evaluation table's rows."""
    models = sorted(report["models"].items(), key=lambda kv: -(kv[1].get("recall@10") or 0.0))
    return [(name, ["" if metrics.get(m) is None else f"{metrics[m]:.4f}" for m in METRICS]) for name, metrics in models]


def markdown_table(report: dict) -> str:
    """One row per model, best recall@10 first."""
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in table_rows(report)]
    return "\n".join(lines)


def protocol_line(report: dict) -> str:
    p = report["protocol"]
    return (
        f"{p['split']}: {p['test_users']} test users (>= {p['min_interactions']} positives, last {p['holdout']} held out), "
        f"{p['train_interactions']} training interactions, {p['known_items']} items ranked, training items excluded"
    )


SEARCH_COLUMNS = ("encoder", "embedding_dim", "dropout", "history_len", "temperature", "learning_rate", "catalog_fields",
                  "per_position", "best_epochs", "seconds_per_epoch", "seconds")


def search_table(selection: dict) -> str:
    """The validation search, one row per trial, and what it chose."""
    if "skipped" in selection:
        return f"No search: {selection['skipped']}."
    metric = selection["metric"].replace(" ", "_")
    lines = [
        f"Search over the {selection['space']} grid on a validation split carved from the training part "
        f"({selection['validation_users']} users): {selection['trials_run']} of {selection['grid_size']} trials "
        f"(seed {selection['seed']}) in {selection['seconds']} s wall, {selection['cpu_seconds']} s process CPU, "
        f"load average {selection['load_average'][0]} then {selection['load_average'][1]}. Chosen: {selection['chosen']}.",
        "",
        "| " + " | ".join((*SEARCH_COLUMNS, metric)) + " |",
        "|---" * (len(SEARCH_COLUMNS) + 1) + "|",
    ]
    # A search recorded before a column existed shows it empty.
    lines += ["| " + " | ".join(str(trial.get(c, "")) for c in (*SEARCH_COLUMNS, metric)) + " |"
              for trial in selection["trials"]]
    if selection.get("members"):
        lines += ["", members_table(selection["members"], metric)]
    if "final_fit" in selection:
        fit = selection["final_fit"]
        lines += ["", f"The chosen configuration, fitted on the whole training part: {fit['epochs']} epochs in "
                      f"{fit['seconds']} s wall ({fit['seconds_per_epoch']} s per epoch), {fit['cpu_seconds']} s process "
                      f"CPU, load average {fit['load_average']}."]
    return "\n".join(lines)


def members_table(members: dict, metric: str) -> str:
    """The chosen configuration's ensembles of its first members on validation, epoch by epoch."""
    curves = members[f"{metric}_by_epoch"]
    epochs = max(len(curve) for curve in curves.values())
    lines = [
        f"Members: the chosen configuration fitted once with {max(curves, key=int)} independently initialised members "
        f"({members['seconds']} s, {members['seconds_per_epoch']} s per epoch), each row the ensemble of its first members, "
        f"each column an epoch. Chosen: {members['chosen']}.",
        "",
        "| members | " + " | ".join(str(epoch) for epoch in range(1, epochs + 1)) + " |",
        "|---" * (epochs + 1) + "|",
    ]
    lines += [f"| {count} | " + " | ".join(str(score) for score in curve) + " |" for count, curve in curves.items()]
    return "\n".join(lines)


def blend_table(selection: dict) -> str:
    """The funnel's coordinate ascent, one row per configuration tried, and what it chose."""
    metric = selection["metric"].replace(" ", "_")
    lines = [
        f"{selection['search']}, on a validation split carved from the training part ({selection['validation_users']} "
        f"users): {selection['trials_run']} configurations in {selection['seconds']} s. Chosen: {_knobs(selection['chosen'])}.",
        "",
        f"| overrides of the serving defaults | {metric} |",
        "|---|---|",
    ]
    lines += [f"| {_knobs(trial['overrides'])} | {trial[metric]} |" for trial in selection["trials"]]
    if "ranker" in selection:
        lines += ["", ranker_line(selection["ranker"])]
    return "\n".join(lines)


def ranker_line(record: dict) -> str:
    """The learned ranker against the chosen blend, out of fold on validation, and whether it was adopted."""
    if "skipped" in record:
        return f"No learned ranker: {record['skipped']}."
    (metric, figures), = ((key, value) for key, value in record.items() if key.startswith("validation_") and
                          isinstance(value, dict))
    verdict = "adopted" if record["adopted"] else "not adopted: the blend ranks"
    return (f"Learned ranker (L2 {record['l2']}, {record['examples']} examples of {record['validation_users']} users): "
            f"{metric.removeprefix('validation_')} {figures['learned_out_of_fold']} out of fold against the blend's "
            f"{figures['blend']} (paired SE {figures['paired_se']}), {verdict}.")


def _knobs(overrides: dict) -> str:
    return ", ".join(f"{knob}={value}" for knob, value in overrides.items()) or "the defaults"


def selection_table(selection: dict) -> str:
    """How a validation-selected model was chosen: the two-tower's grid search or the funnel's blend search."""
    if "skipped" in selection:
        return f"No search: {selection['skipped']}."
    return blend_table(selection) if "overrides" in (selection.get("trials") or [{}])[0] else search_table(selection)


def write_report(report: dict, directory: Path) -> None:
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    sections = [f"# Evaluation\n\n{protocol_line(report)}\n\n{markdown_table(report)}\n"]
    for name, metrics in sorted(report["models"].items()):
        if "selection" in metrics:
            sections.append(f"## How {name} was chosen\n\n{selection_table(metrics['selection'])}\n")
    (directory / REPORT_MD).write_text("\n".join(sections))
