"""The ledger report's arithmetic: groups, percentiles, and the two counterfactuals, from rows alone."""

from __future__ import annotations

import csv
import io

import pytest

from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.ledger_report import Pricer, aggregate, format_csv, format_tables, since_ms

DAY1, DAY2 = 1_764_892_800_000, 1_764_979_200_000  # 2025-12-05 and 2025-12-06, 00:00 UTC


def row(**fields):
    base = {"ended_at_ms": DAY1, "tenant": "acme", "route": "auto", "serving_model": "fast-cheap",
            "chosen_model": "fast-cheap", "status": "complete", "attempts": 1, "input_tokens": 1000,
            "output_tokens": 500, "cost_usd": 0.0, "ttft_ms": 40.0, "duration_ms": 200.0}
    return {**base, **fields}


def test_counterfactuals_price_the_same_tokens_on_the_routes_strongest_and_first_models() -> None:
    policy = parse_policy(load_default_policy_text())
    pricer = Pricer(policy)
    auto = policy.routes["auto"]
    assert pricer.first["auto"] == auto.models[0]
    strongest = pricer.strongest["auto"]
    cheap = policy.models["fast-cheap"].estimated_cost(1000, 500)
    rows = [row(cost_usd=cheap), row(cost_usd=cheap, ended_at_ms=DAY2, tenant="globex", status="failed",
                                     attempts=2, ttft_ms=0.0),
            row(route="", serving_model="strong", cost_usd=0.01)]  # pinned: its own cost in both
    report = aggregate(rows, pricer)
    total = report["total"]
    assert total["requests"] == 3 and total["errors"] == 1 and total["failovers"] == 1
    assert total["cost_usd"] == pytest.approx(2 * cheap + 0.01)
    assert total["all_strongest_usd"] == pytest.approx(
        2 * policy.models[strongest].estimated_cost(1000, 500) + 0.01)
    assert total["all_first_usd"] == pytest.approx(
        2 * policy.models[auto.models[0]].estimated_cost(1000, 500) + 0.01)
    assert total["saved_vs_strongest"] == pytest.approx(1 - total["cost_usd"] / total["all_strongest_usd"])
    assert set(report["tenant"]) == {"acme", "globex"} and set(report["route"]) == {"auto", "(pinned)"}
    assert set(report["day"]) == {"2025-12-05", "2025-12-06"} and report["model"]["strong"]["requests"] == 1
    assert report["tenant"]["globex"]["error_rate"] == 1.0 and report["tenant"]["globex"]["ttft_p50_ms"] == 0.0
    assert {(i["model"], i["day"]) for i in report["spend_by_model_day"]} == {
        ("fast-cheap", "2025-12-05"), ("fast-cheap", "2025-12-06"), ("strong", "2025-12-05")}
    table = format_tables(report)
    assert "vs strongest" in table and "globex" in table
    lines = list(csv.reader(io.StringIO(format_csv(report))))
    assert lines[0][:3] == ["dimension", "key", "requests"] and lines[1][:3] == ["total", "all", "3"]
    assert len(lines) == 2 + 2 + 2 + 2 + 2  # header, total, 2 tenants, 2 routes, 2 models, 2 days


def test_since() -> None:
    now = 1_000_000.0
    assert since_ms("24h", now) == int((now - 86_400) * 1000)
    assert since_ms("7d", now) == int((now - 7 * 86_400) * 1000)
    assert since_ms("2025-12-05") == DAY1
    with pytest.raises(ValueError, match="24h, 7d"):
        since_ms("last week")
