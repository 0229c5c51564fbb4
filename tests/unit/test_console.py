"""The console's server side without gRPC or HTTP: tables, history, policy diff, who is admitted, JSON escaping."""

from __future__ import annotations

import json

import pytest

from routemesh.common.keys import KeyRecord, KeySpec
from routemesh.common.policy import load_default_policy_text, parse_policy, public_json
from routemesh.gateway.console import tables
from routemesh.gateway.console.auth import ConsoleAuth, lock_reasons
from routemesh.gateway.console.history import SnapshotHistory
from routemesh.gateway.console.policy_diff import line_diff, policy_diff, yaml_path
from routemesh.gateway.console.routes import SECURITY_HEADERS, json_text, static_files
from routemesh.common.admin import AdminAuth
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2

POLICY = parse_policy(load_default_policy_text())
BOOTSTRAP = "console-bootstrap-key-" + "k" * 30
XSS = "<img src=x onerror=alert(1)>"
NOW = 1_800_000_000_000


def summary(decision_id: str, route: str = "auto", model: str = "balanced", *, ttft: float = 100.0,
            status: int = common_pb2.FINISH_STATUS_COMPLETE, cost: float = 0.001, at_ms: int = NOW,
            tenant: str = "acme") -> telemetry_pb2.RequestSummary:
    features = common_pb2.Features(task_type=common_pb2.TASK_TYPE_CODE, task_confidence=0.6, complexity=0.3,
                                   input_tokens=42, language="en", signals=["keyword:python"], source="classifier")
    features.predicted_success.update({"strong": 0.9, "fast-cheap": 0.7})
    decision = router_pb2.Decision(
        decision_id=decision_id, model=model, provider="sim", strategy="hybrid", route=route,
        reason="route 'auto': rule 'code' matched", fallbacks=["strong"], features=features, policy_version=3,
        candidates=[router_pb2.Candidate(model=model, provider="sim", eligible=True, rank=1, score=0.95,
                                         factors={"cost": 1.0, "estimated_cost_usd": 0.1}),
                    router_pb2.Candidate(model="strong", provider="sim", eligible=True, rank=2, score=0.45),
                    router_pb2.Candidate(model="tiny", rejection_reason="context too small")])
    final = router_pb2.Final(status=status, model=model, attempts=[
        common_pb2.Attempt(model=model, outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS, ttft_ms=ttft)])
    return telemetry_pb2.RequestSummary(decision_id=decision_id, route=route, model=model, status=status,
                                        ttft_ms=ttft, duration_ms=ttft * 3, cost_usd=cost, tenant=tenant,
                                        timestamp_ms=at_ms, decision=decision, final=final)


def test_models_are_the_policys_in_order_then_any_other_telemetry_saw() -> None:
    snapshot = telemetry_pb2.GetSnapshotResponse(models=[
        telemetry_pb2.ModelHealth(model="strong", samples=4, requests_per_minute=7, ttft_p90_ms=900.0,
                                  circuit_state=telemetry_pb2.CIRCUIT_STATE_OPEN),
        telemetry_pb2.ModelHealth(model="retired", samples=1)])
    rows = tables.model_rows(snapshot, POLICY)
    assert [r["model"] for r in rows] == [*POLICY.models, "retired"]
    strong = next(r for r in rows if r["model"] == "strong")
    assert (strong["provider"], strong["requests_per_minute"], strong["circuit"]) == ("sim", 7, "open")
    assert rows[0]["circuit"] == "closed" and rows[0]["samples"] == 0  # unspecified counts as closed
    assert rows[-1]["in_policy"] is False and rows[-1]["provider"] == ""
    assert [r["model"] for r in tables.model_rows(snapshot, None)] == ["retired", "strong"]


def test_routes_aggregate_the_recent_requests_and_pinned_models_are_one_route() -> None:
    recent = [summary("a", ttft=100.0), summary("b", ttft=300.0, cost=0.002),
              summary("c", ttft=0.0, status=common_pb2.FINISH_STATUS_UNSPECIFIED, model=""),
              summary("d", route="", model="strong", ttft=50.0)]
    rows = {r["route"]: r for r in tables.route_rows(recent)}
    auto = rows["auto"]
    assert (auto["requests"], auto["errors"]) == (3, 1) and auto["error_rate"] == pytest.approx(1 / 3)
    assert auto["spend_usd"] == pytest.approx(0.004)
    assert auto["ttft_p50_ms"] == pytest.approx(200.0)  # failures before a token have no TTFT
    assert auto["models"] == {"balanced": 2, "(none)": 1}
    assert rows["(pinned)"]["requests"] == 1 and rows["(pinned)"]["ttft_p90_ms"] == 50.0


def test_route_timeline_counts_requests_per_bucket_and_drops_older_ones() -> None:
    recent = [summary("a", at_ms=NOW - 1000), summary("b", at_ms=NOW - 2000), summary("c", at_ms=NOW - 45_000),
              summary("d", at_ms=NOW - 700_000)]
    timeline = tables.route_timeline(recent, NOW, bucket_s=30, span_s=600)
    assert timeline["start_ms"] == NOW - 600_000
    counts = timeline["routes"]["auto"]
    assert len(counts) == 20 and counts[-1] == 2 and counts[-2] == 1 and sum(counts) == 3


def test_explain_has_the_candidates_scores_the_chosen_one_the_reason_and_the_features() -> None:
    e = tables.explain(summary("x" * 32, tenant=XSS))
    d = e["decision"]
    assert e["tenant"] == XSS and e["status"] == "complete" and d["reason"].startswith("route 'auto'")
    assert [(c["model"], c["chosen"], c["eligible"]) for c in d["candidates"]] == [
        ("balanced", True, True), ("strong", False, True), ("tiny", False, False)]
    assert d["candidates"][0]["factors"] == {"cost": 1.0}  # the cost estimate has its own column
    assert d["candidates"][2]["rejection_reason"] == "context too small"
    assert d["features"]["task"] == "code" and list(d["features"]["predicted_success"]) == ["strong", "fast-cheap"]
    assert e["final"]["attempts"][0]["outcome"] == "success"
    row = tables.decision_row(summary("y", status=common_pb2.FINISH_STATUS_FAILED))
    assert row["status"] == "failed" and row["error"] is True
    assert tables.task_label(999) == "999" and tables.circuit_label(3) == "half_open"


def test_alert_rows_name_their_state() -> None:
    alert = telemetry_pb2.Alert(rule="slow", kind="latency", severity="warning", subject="model=strong",
                                state=telemetry_pb2.ALERT_STATE_FIRING, value=2300, threshold=1500, summary="slow")
    assert tables.alert_row(alert)["state"] == "firing"


def test_history_keeps_one_sample_per_interval_for_its_span_and_gaps_for_absent_models() -> None:
    history = SnapshotHistory(every_s=2.0, span_s=10.0)
    row = {f: 1.0 for f in ("requests_per_minute", "ttft_p50_ms", "ttft_p90_ms", "error_rate",
                            "spend_per_minute_usd", "in_flight")}
    assert history.add(NOW, [{**row, "model": "a"}])
    assert not history.add(NOW + 500, [{**row, "model": "a"}])  # another console polling: no extra sample
    assert history.add(NOW + 1900, [{**row, "model": "a"}, {**row, "model": "b", "ttft_p90_ms": 7.0}])
    for i in range(2, 10):
        history.add(NOW + i * 2000, [{**row, "model": "a"}])
    assert len(history) == 5
    series = history.series()
    assert series["t"][0] == NOW + 10_000 and series["models"]["a"]["ttft_p90_ms"] == [1.0] * 5
    assert "b" not in series["models"]  # its one sample is past the span
    short = SnapshotHistory(every_s=2.0, span_s=600.0)
    short.add(NOW, [{**row, "model": "a"}])
    short.add(NOW + 2000, [{**row, "model": "b", "ttft_p90_ms": 7.0}])
    assert short.series()["models"]["b"]["ttft_p90_ms"] == [None, 7.0]


def test_policy_diff_shows_changed_lines_with_where_they_are() -> None:
    text = load_default_policy_text()
    before = public_json(POLICY, {})
    after = public_json(parse_policy(text.replace("input_per_mtok: 0.10", "input_per_mtok: 0.09", 1)), {})
    diff = policy_diff(before, after, 1, 2)
    assert (diff["from_version"], diff["to_version"], diff["added"], diff["removed"]) == (1, 2, 1, 1)
    ops = [(line["op"], line["text"].strip()) for line in diff["lines"]]
    assert ("-", "input_per_mtok: 0.1") in ops and ("+", "input_per_mtok: 0.09") in ops
    assert diff["lines"][0]["op"] == "@" and diff["lines"][0]["text"].endswith("models > fast-cheap > pricing")
    assert line_diff("a: 1\n", "a: 1\n") == []
    assert yaml_path(["a:", "  b:", "    c: 1", "  d: 2"], 3) == "a"


def test_the_console_is_open_on_a_dev_mesh_and_locked_once_credentials_are_in_use() -> None:
    assert lock_reasons({}) == [] and lock_reasons({"ROUTEMESH_REQUIRE_KEYS": "false"}) == []
    assert lock_reasons({"ROUTEMESH_ADMIN_KEY": BOOTSTRAP}) == ["ROUTEMESH_ADMIN_KEY is set"]
    assert len(lock_reasons({"ROUTEMESH_REQUIRE_KEYS": "true", "ROUTEMESH_REQUIRE_ADMIN": "1",
                             "ROUTEMESH_KEY_PEPPER": "p" * 40, "ROUTEMESH_TLS_CERT": "/c.pem"})) == 4
    assert ConsoleAuth.from_env(environ={}).open


class Keys:
    """A KeyCache stand-in: one admin key, one user key; "boom" means the store is down."""

    def __init__(self) -> None:
        self.records = {"rmk_admin": "admin", "rmk_user": "user"}

    async def verify(self, token: str) -> KeyRecord | None:
        if token == "rmk_boom":
            raise ConnectionError("redis down")
        role = self.records.get(token)
        return KeyRecord(key_id="0" * 16, spec=KeySpec(tenant="ops", role=role), secret_hash="",
                         created_at_ms=0) if role else None


async def test_a_locked_console_admits_the_bootstrap_key_and_admin_api_keys_only() -> None:
    open_console = ConsoleAuth()
    assert (await open_console.check("")).admitted
    reasons = ["ROUTEMESH_ADMIN_KEY is set"]
    auth = ConsoleAuth(reasons, AdminAuth.create(Keys(), BOOTSTRAP))  # type: ignore[arg-type]
    assert (await auth.check(f"Bearer {BOOTSTRAP}")).actor == "admin-key:bootstrap"
    assert (await auth.check(f"bearer {BOOTSTRAP}")).admitted
    assert (await auth.check("Bearer rmk_admin")).actor == "admin-key:" + "0" * 16
    for header in ("", "Bearer ", f"Bearer {BOOTSTRAP}x", "Bearer rmk_user", "Bearer rmk_nope", f"Basic {BOOTSTRAP}"):
        verdict = await auth.check(header)
        assert verdict.status == 401 and BOOTSTRAP not in verdict.message, header
    assert (await auth.check("Bearer rmk_boom")).status == 503
    bootstrap_only = ConsoleAuth(reasons, AdminAuth.create(None, BOOTSTRAP))
    assert "cannot check API keys" in (await bootstrap_only.check("Bearer rmk_admin")).message
    nothing = await ConsoleAuth(["the mesh runs mutual TLS"]).check(f"Bearer {BOOTSTRAP}")
    assert nothing.status == 401 and "can check none" in nothing.message


def test_json_answers_cannot_be_read_as_html_and_the_page_is_packaged() -> None:
    text = json_text({"tenant": XSS + " & more"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"tenant": XSS + " & more"}
    files = static_files()
    assert {"index.html", "console.js", "chart.js", "dom.js", "console.css"} <= set(files)
    page = files["index.html"][0].decode()
    assert "<script>" not in page and 'src="/console/static/console.js"' in page and " style=" not in page
    for name in ("console.js", "chart.js", "dom.js"):  # text only: strings never become markup
        script = files[name][0].decode()
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script, name
    assert "script-src 'self'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in SECURITY_HEADERS["Content-Security-Policy"]
