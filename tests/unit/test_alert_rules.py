"""The chart's alerting rules and Grafana dashboard: promtool checks the rules
file and runs its unit tests, the chart ships exactly that file (thresholds
aside), and every metric the rules and the dashboard query is one the operator
exports. promtool and helm come from `make tools`; without them these tests
fail rather than skip, so CI cannot pass without running them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from .promql import exported, metric_names, unknown
from .test_packaging import CHART, one, tool

RULES = CHART / "rules" / "tenant-operator.rules.yaml"
RULE_TESTS = Path(__file__).parent / "promtool" / "tenant-operator.rules.test.yaml"
DASHBOARD = CHART / "dashboards" / "tenant-operator.json"
THRESHOLD = "tenant_operator:threshold_"


def required(name: str) -> str:
    path = tool(name)
    if not path:
        pytest.fail(f"{name} is not installed: run `make tools`")
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([required("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([required("helm"), "template", "tenant-operator", str(CHART), "--namespace", "monitoring",
                           *args], capture_output=True, text=True, timeout=120)


def helm_template(*args: str) -> list[dict]:
    run = helm(*args)
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def rules_file() -> dict:
    return yaml.safe_load(RULES.read_text())


def rules(doc: dict) -> list[dict]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts(doc: dict) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules(doc) if "alert" in rule}


ENABLED = ("--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true",
           "--set", "prometheusRule.additionalLabels.release=kube-prometheus-stack")


# --- promtool ------------------------------------------------------------------------------------

def test_promtool_checks_the_rules_file():
    run = promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules(rules_file()))} rules found" in run.stdout


def test_promtool_unit_tests_pass():
    run = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not():
    cases: dict[str, list[bool]] = {}
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test") or []:
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for name in alerts(rules_file()):
        assert True in cases.get(name, []), f"{name}: no promtool case where it fires"
        # A silent case: an evaluation with no alert, or a firing one where other series stay silent.
        assert False in cases[name] or len(cases[name]) > 1, f"{name}: no promtool case where it stays silent"


def test_promtool_refuses_a_broken_rule(tmp_path):
    """The check above can fail: an expression that does not parse is refused."""
    broken = rules_file()
    alerts(broken)["TenantNotReady"]["expr"] = "max by (tenant) (tenant_operator_tenant_phase"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", str(path)).returncode != 0


# --- the chart ----------------------------------------------------------------------------------

def test_chart_ships_the_rules_file_and_the_dashboard():
    docs = helm_template(*ENABLED)
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # With the default thresholds the shipped groups are the tested file, rule for rule.
    assert rule["spec"]["groups"] == rules_file()["groups"]

    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(dashboards) == 1
    cm = dashboards[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tenant-operator.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_renders_neither_by_default():
    docs = helm_template()
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]


def test_chart_thresholds_change_only_the_threshold_rules(tmp_path):
    docs = helm_template(*ENABLED, "--set", "prometheusRule.thresholds.credentialsRotationPeriodSeconds=15552000",
                         "--set", "prometheusRule.thresholds.backendErrorsPerSecond=0.5")
    shipped = {"groups": one(docs, "PrometheusRule")["spec"]["groups"]}
    records = {r["record"]: r["expr"] for r in rules(shipped) if "record" in r}
    assert records[THRESHOLD + "credentials_rotation_period_seconds"] == "vector(15552000)"
    assert records[THRESHOLD + "backend_errors_per_second"] == "vector(0.5)"
    assert records[THRESHOLD + "backup_age_margin_seconds"] == "vector(3600)"
    assert alerts(shipped) == alerts(rules_file())
    path = tmp_path / "shipped.rules.yaml"
    path.write_text(yaml.safe_dump(shipped))
    run = promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_threshold_rule_has_a_chart_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["thresholds"]
    records = [r["record"][len(THRESHOLD):] for r in rules(rules_file()) if r.get("record", "").startswith(THRESHOLD)]
    camel = {"".join(w if i == 0 else w.capitalize() for i, w in enumerate(r.split("_"))): r for r in records}
    assert set(camel) == set(values)
    for key, record in camel.items():
        # The chart's default is the number in the tested file.
        expr = next(r["expr"] for r in rules(rules_file()) if r.get("record") == THRESHOLD + record)
        assert expr == f"vector({values[key]})", key
    run = helm(*ENABLED, "--set", "prometheusRule.thresholds.backupAgeMarginSeconds=soon")
    assert run.returncode != 0 and "backupAgeMarginSeconds must be a number" in run.stderr


# --- metric names ---------------------------------------------------------------------------------

def test_metric_names_of_an_expression():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{job="x", le!="+Inf"}[$__rate_interval])))'
            ' / on(tenant) group_left(phase) max without (pod) (b_total offset 5m) > bool 2.5e+06'
            ' and time() - c:recorded unless sum(d) by (backend)')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c:recorded", "d"}


def test_known_metrics_come_from_the_registry():
    known = exported()
    assert known["tenant_operator_tenant_phase"] == "gauge"
    assert known["tenant_operator_backend_errors_total"] == "counter"
    assert known["tenant_operator_reconcile_duration_seconds"] == "histogram"
    assert unknown({"tenant_operator_reconcile_duration_seconds_bucket", "tenant_operator_tenants",
                    "tenant_operator_tenants_bucket", "tenant_operator_backend_errors"}, known) == {
        "tenant_operator_tenants_bucket", "tenant_operator_backend_errors"}


def test_alert_rules_query_only_exported_metrics():
    doc = rules_file()
    recorded = {r["record"] for r in rules(doc) if "record" in r}
    known = {**exported(), **dict.fromkeys(recorded, "recorded")}
    for rule in rules(doc):
        missing = unknown(metric_names(rule["expr"]), known)
        assert not missing, f"rule {rule.get('alert') or rule.get('record')} queries {sorted(missing)}"


def test_dashboard_queries_only_exported_metrics():
    known = exported()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = 0
    for panel in panels:
        for target in panel.get("targets") or []:
            names = metric_names(target["expr"])
            missing = unknown(names, known)
            assert not missing, f"panel {panel['title']!r} queries {sorted(missing)}: not exported by the operator"
            queried += len(names)
    assert queried >= len(panels)   # every panel reads at least one metric


def test_dashboard_panels_cover_the_issue():
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Tenants by phase", "Reconcile latency", "Backup age per tenant", "Backend errors"} <= titles
