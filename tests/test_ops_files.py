"""The Prometheus alert rules and the Grafana dashboard of docs/ops: valid, and about metrics the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from prometheus_client import REGISTRY

from kapparec import settings

OPS = settings.PROJECT_ROOT / "docs" / "ops"
RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts.test.yml"
DASHBOARD = OPS / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bkapparec_[a-z_]+\b")
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make install` installs it (Debian's prometheus package)"
    return found


def exported_families() -> dict[str, str]:
    """Name -> type of every metric ``kapparec serve`` exports (those serving/metrics.py registers)."""
    import serving.metrics  # noqa: F401 - registers the metrics

    return {family.name: family.type for family in REGISTRY.collect() if family.name.startswith("kapparec_")}


def exported_series() -> set[str]:
    return {name + suffix for name, kind in exported_families().items() for suffix in SAMPLE_SUFFIXES[kind]}


def family_of(series: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_alert_rules_pass_promtool_check():
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_alerts_fire_on_the_failures_they_name():
    tested = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, cwd=OPS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_series()
    referenced = {"rules": set(METRIC_NAME.findall(RULES.read_text())),
                  "dashboard": set(METRIC_NAME.findall("\n".join(dashboard_expressions())))}
    for where, names in referenced.items():
        assert names, f"the {where} reference no kapparec metric"
        assert names <= exported, f"the {where} reference metrics nothing exports: {sorted(names - exported)}"


def test_dashboard_shows_every_exported_metric():
    shown = {family_of(name) for name in METRIC_NAME.findall("\n".join(dashboard_expressions()))}
    missing = set(exported_families()) - shown
    assert not missing, f"metrics no panel shows: {sorted(missing)}"
