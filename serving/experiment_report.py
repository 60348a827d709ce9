"""The A/B report: per experiment and variant, CTR and conversion with intervals, lift and significance.

Computed from attributed impressions (``featurestore.attribution``), so the report of a store the
stream job built equals the report of a backfill of the same log. An impression is one item shown
at one position on one page; it is *clicked* when the user engaged with that item after it was
shown (see ``featurestore/attribution.py``).

Statistics: Wilson score intervals at 95% for each rate, and a two-sided two-proportion z-test of
each variant's CTR against the control's. A variant (or its control) with fewer than
``min_impressions`` impressions, or no click on either side, gets the verdict "not enough data"
and never a winner.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from featurestore.attribution import Outcome

Z_95 = 1.959963984540054
SIGNIFICANCE = 0.05
DEFAULT_MIN_IMPRESSIONS = 200
NOT_ENOUGH_DATA = "not enough data"


@dataclass
class Tally:
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    users: set[str] = field(default_factory=set)

    def add(self, outcome: Outcome) -> None:
        self.impressions += 1
        self.clicks += outcome.clicked
        self.conversions += outcome.converted
        self.users.add(outcome.shown.user_id)

    def rates(self) -> dict:
        return {
            "impressions": self.impressions, "clicks": self.clicks, "conversions": self.conversions,
            "users": len(self.users),
            "ctr": _rate(self.clicks, self.impressions), "ctr_ci95": wilson(self.clicks, self.impressions),
            "conversion_rate": _rate(self.conversions, self.impressions),
            "conversion_ci95": wilson(self.conversions, self.impressions),
        }


def _rate(hits: int, trials: int) -> float | None:
    return hits / trials if trials else None


def wilson(hits: int, trials: int, z: float = Z_95) -> list[float] | None:
    """The Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if not trials:
        return None
    p = hits / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # At 0 or all hits the bound is exact; floating point would leave it a hair off.
    return [0.0 if hits == 0 else centre - half, 1.0 if hits == trials else centre + half]


def two_proportion_p_value(hits_a: int, trials_a: int, hits_b: int, trials_b: int) -> float:
    """Two-sided p-value of H0: the two proportions are equal (pooled z-test)."""
    pooled = (hits_a + hits_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if spread == 0:
        return 1.0
    z = (hits_a / trials_a - hits_b / trials_b) / spread
    return math.erfc(abs(z) / math.sqrt(2))


def split_bucket(bucket: str) -> tuple[str, str]:
    experiment, _, variant = bucket.partition("/")
    return experiment, variant


def day_of(event_time_ms: int) -> str:
    return datetime.fromtimestamp(event_time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def report_from_store(redis_url: str, version: str | None, experiments_file, window_minutes: int,
                      min_impressions: int = DEFAULT_MIN_IMPRESSIONS) -> dict:
    """The report of a feature version (default: the current one), each experiment's control
    named by the experiments file: what ``kapparec experiments report`` prints and the console shows."""
    from featurestore.attribution import read_outcomes
    from featurestore.redis_store import RedisFeatureStore
    from serving import experiments

    store = RedisFeatureStore(redis_url)
    version = store.require_version(version)
    configured = experiments.load(experiments_file)
    controls = {e.name: e.control_variant for e in configured.experiment}
    report = build_report(read_outcomes(store.url, version, window_minutes * 60_000), controls, min_impressions)
    report["feature_version"] = version
    return report


def build_report(outcomes: Iterable[Outcome], controls: dict[str, str] | None = None,
                 min_impressions: int = DEFAULT_MIN_IMPRESSIONS) -> dict:
    """The report as a JSON-ready dict. ``controls`` names each experiment's control variant
    (from the experiments file); an experiment it does not name uses a variant called
    "control", else its first variant by name."""
    variants: dict[str, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    days: dict[str, dict[str, dict[str, Tally]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Tally)))
    by_position: dict[int, Tally] = defaultdict(Tally)
    by_source: dict[str, Tally] = defaultdict(Tally)
    for outcome in outcomes:
        shown = outcome.shown
        by_position[shown.position].add(outcome)
        by_source[shown.source].add(outcome)
        if shown.bucket:
            experiment, variant = split_bucket(shown.bucket)
            variants[experiment][variant].add(outcome)
            days[experiment][variant][day_of(shown.event_time)].add(outcome)
    controls = controls or {}
    return {
        "experiments": {
            name: _experiment(tallies, days[name], _control_of(name, tallies, controls), min_impressions)
            for name, tallies in sorted(variants.items())
        },
        "by_position": {str(p): _brief(t) for p, t in sorted(by_position.items())},
        "by_source": {s: _brief(t) for s, t in sorted(by_source.items())},
        "min_impressions": min_impressions,
    }


def _control_of(experiment: str, tallies: dict[str, Tally], controls: dict[str, str]) -> str:
    named = controls.get(experiment)
    if named:
        return named
    return "control" if "control" in tallies else sorted(tallies)[0]


def _experiment(tallies: dict[str, Tally], days: dict[str, dict[str, Tally]], control: str, min_impressions: int) -> dict:
    base = tallies.get(control, Tally())
    variants = {}
    for name, tally in sorted(tallies.items()):
        row = tally.rates()
        row["daily"] = {day: _brief(t) for day, t in sorted(days[name].items())}
        if name == control:
            row.update(lift_vs_control=None, p_value=None, verdict="control")
        else:
            row.update(_compare(tally, base, min_impressions))
        variants[name] = row
    return {"control": control, "variants": variants}


def _compare(variant: Tally, control: Tally, min_impressions: int) -> dict:
    if min(variant.impressions, control.impressions) < min_impressions or variant.clicks + control.clicks == 0:
        return {"lift_vs_control": None, "p_value": None, "verdict": NOT_ENOUGH_DATA}
    lift = None if control.clicks == 0 else (variant.clicks / variant.impressions) / (control.clicks / control.impressions) - 1
    p_value = two_proportion_p_value(variant.clicks, variant.impressions, control.clicks, control.impressions)
    if p_value >= SIGNIFICANCE:
        verdict = "no significant difference"
    else:
        verdict = "better than control" if variant.clicks * control.impressions > control.clicks * variant.impressions \
            else "worse than control"
    return {"lift_vs_control": lift, "p_value": p_value, "verdict": verdict}


def _brief(tally: Tally) -> dict:
    return {"impressions": tally.impressions, "clicks": tally.clicks, "ctr": _rate(tally.clicks, tally.impressions),
            "ctr_ci95": wilson(tally.clicks, tally.impressions)}


def render(report: dict) -> str:
    """The report as readable text: one table per experiment, then CTR by position and by source."""
    lines = []
    for name, experiment in report["experiments"].items():
        lines.append(f"experiment {name} (control: {experiment['control']})")
        lines.append(f"  {'variant':<16}{'impr':>8}{'clicks':>8}{'users':>7}  {'CTR [95% CI]':<24}{'lift':>8}  {'p':>8}  verdict")
        for variant, row in experiment["variants"].items():
            lift = "" if row["lift_vs_control"] is None else f"{row['lift_vs_control']:+.1%}"
            p_value = "" if row["p_value"] is None else f"{row['p_value']:.2g}"
            lines.append(f"  {variant:<16}{row['impressions']:>8}{row['clicks']:>8}{row['users']:>7}  "
                         f"{_ctr(row):<24}{lift:>8}  {p_value:>8}  {row['verdict']}")
    for title, key in (("position", "by_position"), ("source", "by_source")):
        lines.append(f"CTR by {title}: " + ", ".join(f"{k} {_ctr(row)}" for k, row in report[key].items()))
    return "\n".join(lines) if lines else "no impressions yet"


def _ctr(row: dict) -> str:
    if row["ctr"] is None:
        return "-"
    low, high = row["ctr_ci95"]
    return f"{row['ctr']:.3f} [{low:.3f}, {high:.3f}]"


def plot(report: dict, path) -> None:
    """CTR per variant and day with its 95% interval, one panel per experiment (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = report["experiments"]
    figure, axes = plt.subplots(max(1, len(experiments)), 1, figsize=(8, 3.2 * max(1, len(experiments))), squeeze=False)
    for axis, (name, experiment) in zip(axes[:, 0], experiments.items()):
        for variant, row in experiment["variants"].items():
            daily = row["daily"]
            days = list(daily)
            ctr = [daily[d]["ctr"] for d in days]
            low = [daily[d]["ctr"] - daily[d]["ctr_ci95"][0] for d in days]
            high = [daily[d]["ctr_ci95"][1] - daily[d]["ctr"] for d in days]
            axis.errorbar(days, ctr, yerr=[low, high], marker="o", capsize=4, label=variant)
        axis.set_title(f"{name}: CTR per day (95% Wilson interval)")
        axis.set_ylabel("CTR")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
