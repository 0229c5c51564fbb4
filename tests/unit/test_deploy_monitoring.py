"""deploy/prometheus and deploy/grafana: promtool checks and unit-tests the rules, the dashboard is well formed, and
both read only metrics of the contract (tests/metric_contract.py)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from routemesh.common.policy_alerts import KINDS
from tests.metric_contract import JOBS, known_series, metric_names, selector_labels

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
RULES = PROMETHEUS / "routemesh-rules.yaml"
DASHBOARD = ROOT / "deploy/grafana/routemesh-dashboard.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is required to check deploy/prometheus: install Debian's `prometheus` package "
                    "(apt-get install prometheus; .ci/run installs it when missing)")
    return subprocess.run([path, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def check_contract(exprs: dict[str, str]) -> list[str]:
    """Problems of expressions (where -> PromQL): names outside the contract, labels a metric does not have."""
    series = known_series()
    problems = []
    for where, expr in exprs.items():
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        problems += [f"{where}: {name} is not in the metric contract" for name in sorted(names - set(series))]
        problems += [f"{where}: {name} has no label {label!r}" for name, label in selector_labels(expr)
                     if name in series and label not in series[name]]
    return problems


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass_and_cover_budget_and_outage():
    result = promtool("test", "rules", "routemesh-rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {case["alertname"] for test in yaml.safe_load((PROMETHEUS / "routemesh-rules.test.yaml").read_text())
              ["tests"] for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert {"RoutemeshBudgetPastFraction", "RoutemeshBudgetExhausted", "RoutemeshModelBreakerOpen"} <= tested


def test_promtool_checks_the_example_configuration():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == set(JOBS)


def test_every_built_in_rule_kind_has_a_prometheus_rule_with_severity_and_summary():
    by_kind = {rule["labels"]["kind"] for rule in rules()}
    assert set(KINDS) <= by_kind, f"no Prometheus rule for {sorted(set(KINDS) - by_kind)}"
    for rule in rules():
        assert rule["alert"].startswith("Routemesh") and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_the_rules_read_only_contract_metrics():
    assert check_contract({rule["alert"]: rule["expr"] for rule in rules()}) == []


def test_the_contract_checker_catches_strangers():
    assert check_contract({"x": 'sum(rate(routemesh_requests_totl{route="a"}[5m]))',
                           "y": 'routemesh_breaker_state{route="a"} > 1'}) == [
        "x: routemesh_requests_totl is not in the metric contract",
        "y: routemesh_breaker_state has no label 'route'"]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return found


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["title"] and board["uid"]
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    all_panels = panels(board)
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid) and grid["w"] > 0 and grid["h"] > 0
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], f"panel {panel['id']} has no title or no targets"
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_dashboard_shows_what_operators_ask_for():
    exprs = " ".join(target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", []))
    for wanted in ("routemesh_requests_total", "gen_ai_server_time_to_first_token_seconds_bucket",
                   "routemesh_spend_usd_total", "routemesh_provider_attempts_total", "routemesh_failovers_total",
                   "routemesh_breaker_state", "routemesh_inflight_streams", "routemesh_budget_remaining_usd",
                   "routemesh_ledger_backlog_rows", "routemesh_ledger_dropped_rows_total",
                   "process_cpu_seconds_total", "process_resident_memory_bytes", "routemesh_alerts_firing"):
        assert wanted in exprs, wanted
    assert "histogram_quantile(0.5" in exprs and "histogram_quantile(0.9" in exprs


def test_the_dashboard_reads_only_contract_metrics():
    board = dashboard()
    exprs = {f"panel {panel['id']} ({panel['title']}) {target['refId']}": target["expr"]
             for panel in panels(board) for target in panel.get("targets", [])}
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs[f"variable {var['name']}"] = var["definition"].replace("label_values(", "").split(",")[0]
    assert check_contract(exprs) == []


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's PromQL, Grafana's variables given values, written as recording rules for promtool to parse."""
    exprs = [target["expr"].replace("$__rate_interval", "5m").replace("$route", ".*")
             for panel in panels(dashboard()) for target in panel.get("targets", [])]
    document = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": expr}
                                                           for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(document))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
