"""The promotion gate on equal terms: the candidate and production, measured on the same split, now.

A production model's stored metrics were measured on the split of its own day; comparing a
candidate with them compares two different exams. So the gate rescores production's exported
artifacts on today's evaluation split, with the same protocol and the same point-in-time user
state (through the feature store's definitions), and compares that with the candidate's
held-out twin on the same split. Items production never saw cannot be recommended by it, so
they rank last for it. If production cannot be rescored (its artifacts are broken), the gate
says so and refuses, unless the caller forces the promotion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kapparec.errors import KapparecError
from modelfiles.registry import ModelVersion
from training.evaluate import measure
from training.split import Split
from training.tower_inputs import UserLog


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    production_metrics: dict | None

    def record(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "production_rescored": self.production_metrics}


def rescore(version: ModelVersion, split: Split) -> dict[str, float]:
    """``version``'s exported two-tower measured on ``split`` (raises ``KapparecError`` if it cannot be)."""
    from modelfiles.two_tower import ExportedTwoTower
    from training.two_tower.train import UserState

    try:
        exported = ExportedTwoTower(version.path)
        history_len = int(exported.spec["history_len"])
    except Exception as exc:  # noqa: BLE001 - any broken artifact means "cannot be rescored"
        raise KapparecError(f"production model {version.id} cannot be rescored: {_one_line(exc)}") from None
    state = UserState.at_cutoff(UserLog(split.train if split.events is None else split.events), history_len)
    column = {item: i for i, item in enumerate(exported.item_ids.tolist())}
    known = np.array([item in column for item in split.known_items])
    rows = np.array([column[item] for item in split.known_items if item in column], dtype=np.int64)
    candidates = exported.item_embeddings[rows]

    def score_batch(users: list[str]) -> np.ndarray:
        scores = np.full((len(users), len(split.known_items)), -np.inf, dtype=np.float32)
        scores[:, known] = exported.embed_queries(state.features(users, history_len)) @ candidates.T
        return scores

    return measure(split, score_batch, label=f"production {version.id}")


def decide(candidate: dict, production: ModelVersion | None, split: Split, margin: float, force: bool) -> GateDecision:
    """Whether the candidate (its held-out twin's ``candidate`` metrics on ``split``) replaces production."""
    if production is None:
        passed, reason = passes_gate(candidate, None, margin)
        return GateDecision(passed or force, reason, None)
    try:
        rescored = rescore(production, split)
    except KapparecError as exc:
        if force:
            return GateDecision(True, f"{exc}; promoted anyway (--force)", None)
        return GateDecision(False, f"{exc}; refusing to promote (--force promotes anyway)", None)
    passed, reason = passes_gate(candidate, rescored, margin)
    reason = f"{reason} (both on today's split)"
    if not passed and force:
        return GateDecision(True, f"{reason}; promoted anyway (--force)", rescored)
    return GateDecision(passed, reason, rescored)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def metric_of(record: dict, metric: str) -> float | None:
    """``metric`` from a metrics dict or from a version's metadata (its ``metrics``)."""
    value = record.get(metric, (record.get("metrics") or {}).get(metric))
    return None if value is None else float(value)


def passes_gate(candidate: dict, production: dict | None, margin: float, metric: str = "recall@10") -> tuple[bool, str]:
    """Whether ``candidate`` may replace ``production``, and why.

    The margin is *relative*: the candidate passes if it keeps at least ``(1 - margin)`` of
    production's value (margin 0.02 = "may lose up to 2% of production's recall@10"). Relative,
    because metric scales differ between catalogs and metrics (recall@10 of 0.05 vs 0.4), and a
    fixed absolute margin would be lax on one and strict on the other. Higher is better.
    Either argument may be a metrics dict or a version's metadata.
    """
    if not 0 <= margin < 1:
        raise KapparecError(f"gate margin must be in [0, 1), got {margin}")
    value = metric_of(candidate, metric)
    if value is None or math.isnan(value):
        return False, f"candidate has no {metric}"
    if production is None:
        return True, f"no production model: candidate {metric}={value:.4f} passes"
    baseline = metric_of(production, metric)
    if baseline is None or math.isnan(baseline):
        return True, f"production has no {metric}: candidate {metric}={value:.4f} passes"
    floor = baseline * (1 - margin)
    verdict = "passes" if value >= floor else "fails"
    return value >= floor, f"candidate {metric}={value:.4f} {verdict}: production {baseline:.4f}, floor {floor:.4f} (margin {margin:.0%})"
