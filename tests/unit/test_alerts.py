"""Alert rules without grpc: the state machine (pending, for_s, firing, resolved), readings, payload shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from routemesh.common.outcomes import AttemptOutcome
from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.alerting.payloads import ZERO_TIME, json_body, slack_body
from routemesh.telemetry.alerting.tracker import AlertTracker, Reading, RuleRef, fingerprint
from routemesh.telemetry.alerts import AlertEngine
from routemesh.telemetry.store import InMemoryHealthStore, ObservationRecord
from routemesh.v1 import control_pb2, telemetry_pb2

RULE = RuleRef("slow", "latency", "warning", for_s=30)
T0 = 1_800_000_000_000


def reading(active: bool, value: float = 2500.0, subject: str = "model=strong") -> Reading:
    return Reading(subject, active, value, 2000.0, f"{subject}: {value:.0f} ms")


# The state machine.

def test_a_condition_is_pending_until_for_s_has_passed_then_fires_once():
    tracker = AlertTracker()
    assert tracker.update(RULE, [reading(True)], T0) == []
    assert tracker.alerts[fingerprint("slow", "model=strong")].state == "pending"
    assert tracker.update(RULE, [reading(True)], T0 + 29_999) == []
    fired = tracker.update(RULE, [reading(True)], T0 + 30_000)
    assert [(t.status, t.alert.subject, t.alert.started_at_ms) for t in fired] == [("firing", "model=strong",
                                                                                     T0 + 30_000)]
    # Still true: no second notification however often it is evaluated (dedupe).
    for i in range(1, 20):
        assert tracker.update(RULE, [reading(True, 2600.0 + i)], T0 + 30_000 + i * 1000) == []
    assert tracker.firing()[0].value == 2619.0  # the newest value is shown


def test_a_pending_alert_that_clears_says_nothing():
    tracker = AlertTracker()
    tracker.update(RULE, [reading(True)], T0)
    assert tracker.update(RULE, [reading(False)], T0 + 10_000) == []
    assert tracker.alerts == {} and list(tracker.resolved) == []
    # The clock starts again: pending from the new start.
    tracker.update(RULE, [reading(True)], T0 + 20_000)
    assert tracker.update(RULE, [reading(True)], T0 + 45_000) == []
    assert len(tracker.update(RULE, [reading(True)], T0 + 50_000)) == 1


def test_a_firing_alert_resolves_once_and_a_new_episode_fires_again():
    tracker = AlertTracker()
    instant = RuleRef("down", "outage", "critical", for_s=0)
    assert [t.status for t in tracker.update(instant, [reading(True)], T0)] == ["firing"]
    resolved = tracker.update(instant, [reading(False, 0.0)], T0 + 5000)
    assert [(t.status, t.alert.started_at_ms, t.alert.resolved_at_ms) for t in resolved] == [
        ("resolved", T0, T0 + 5000)]
    assert tracker.update(instant, [reading(False, 0.0)], T0 + 6000) == []
    assert [a.state for a in tracker.resolved] == ["resolved"]
    again = tracker.update(instant, [reading(True)], T0 + 7000)
    assert [t.status for t in again] == ["firing"]
    assert again[0].alert.fingerprint == resolved[0].alert.fingerprint  # the same alert identity


def test_unknown_data_keeps_alerts_as_they_are_and_missing_subjects_resolve():
    tracker = AlertTracker()
    instant = RuleRef("down", "outage", "critical", for_s=0)
    tracker.update(instant, [reading(True), reading(True, subject="model=balanced")], T0)
    assert tracker.update(instant, None, T0 + 1000) == []  # the store could not be read
    assert len(tracker.firing()) == 2
    gone = tracker.update(instant, [reading(True)], T0 + 2000)  # balanced left the policy
    assert [(t.status, t.alert.subject) for t in gone] == [("resolved", "model=balanced")]
    assert "no longer measured" in gone[0].alert.summary


def test_removing_a_rule_resolves_its_alerts():
    tracker = AlertTracker()
    tracker.update(RuleRef("down", "outage", "critical", 0), [reading(True)], T0)
    retired = tracker.retire({"other"}, T0 + 1000)
    assert [t.status for t in retired] == ["resolved"] and tracker.firing() == []


def test_fingerprints_are_stable_and_distinct():
    assert fingerprint("a", "model=x") == fingerprint("a", "model=x")
    assert len({fingerprint("a", "model=x"), fingerprint("a", "model=y"), fingerprint("b", "model=x")}) == 3


# Payloads.

def fired_and_resolved():
    tracker = AlertTracker()
    instant = RuleRef("down", "outage", "critical", 0)
    fired = tracker.update(instant, [reading(True)], T0)[0]
    resolved = tracker.update(instant, [reading(False)], T0 + 61_000)[0]
    return fired, resolved


def test_json_body_is_alertmanager_like():
    fired, resolved = fired_and_resolved()
    body = json_body(fired, "ops")
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "down", "rule": "down", "kind": "outage", "severity": "critical",
                               "subject": "model=strong", "service": "routemesh"}
    assert alert["annotations"]["summary"] == "model=strong: 2500 ms"
    assert alert["startsAt"] == "2027-01-15T08:00:00.000Z" and alert["endsAt"] == ZERO_TIME
    assert alert["fingerprint"] == fingerprint("down", "model=strong")
    done = json_body(resolved, "ops")
    assert done["status"] == "resolved" and done["alerts"][0]["endsAt"] == "2027-01-15T08:01:01.000Z"
    json.dumps(body)  # serialisable as is


def test_slack_body_has_text_and_a_colored_attachment():
    fired, resolved = fired_and_resolved()
    body = slack_body(fired)
    assert body["text"].startswith(":rotating_light: [FIRING] down (critical)")
    (attachment,) = body["attachments"]
    assert attachment["color"] == "#d0021b" and attachment["ts"] == T0 // 1000
    assert {"title": "Subject", "value": "model=strong", "short": True} in attachment["fields"]
    done = slack_body(resolved)
    assert done["text"].startswith(":white_check_mark: [RESOLVED]") and done["attachments"][0]["color"] == "#2eb886"


# The engine over an in-memory store, with a clock of the test's and a sender that records.

class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def configure(self, hooks) -> None:
        self.hooks = hooks

    def submit(self, webhook: str, body: dict[str, Any], what: str) -> bool:
        self.sent.append((webhook, body))
        return True

    async def stop(self) -> None:
        pass


def holder_with(alerts: dict[str, Any], **changes: Any) -> PolicyHolder:
    doc = yaml.safe_load(load_default_policy_text())
    doc.update(changes)
    doc["alerts"] = alerts
    policy = parse_policy(yaml.safe_dump(doc), environ={})
    holder = PolicyHolder()
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    return holder


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def engine_with(rules: list[dict[str, Any]], **changes: Any) -> tuple[AlertEngine, RecordingSender, Clock,
                                                                       InMemoryHealthStore]:
    clock, sender = Clock(), RecordingSender()
    store = InMemoryHealthStore(window_s=60, cache_ttl_s=0)
    holder = holder_with({"evaluate_every_s": 1, "webhooks": [{"name": "ops", "url": "http://127.0.0.1:9/h"},
                                                              {"name": "chat", "url": "http://127.0.0.1:9/s",
                                                               "format": "slack"}],
                          "rules": rules}, **changes)
    return AlertEngine(holder, store, sender=sender, clock_ms=clock), sender, clock, store  # type: ignore[arg-type]


async def fail(store: InMemoryHealthStore, model: str, n: int, at_ms: int, ttft: float = 0.0, ok: bool = False):
    outcome = AttemptOutcome.SUCCESS if ok else AttemptOutcome.UPSTREAM_ERROR
    await store.record([ObservationRecord(model=model, timestamp_ms=at_ms, outcome=outcome, ttft_ms=ttft)
                        for _ in range(n)])


async def test_error_rate_needs_min_samples_and_for_s_and_notifies_every_webhook_once():
    engine, sender, clock, store = engine_with([{"name": "errors", "kind": "error_rate", "above": 0.2,
                                                 "for_s": 2, "min_samples": 10, "models": ["balanced"]}])
    await fail(store, "balanced", 9, clock.ms)
    assert await engine.evaluate() == []  # 9 samples < 10
    await fail(store, "balanced", 1, clock.ms)
    assert await engine.evaluate() == []  # pending
    clock.ms += 2000
    fired = await engine.evaluate()
    assert [(t.status, t.alert.subject) for t in fired] == [("firing", "model=balanced")]
    assert [name for name, _ in sender.sent] == ["ops", "chat"]
    assert "text" in sender.sent[1][1] and sender.sent[0][1]["status"] == "firing"
    clock.ms += 1000
    assert await engine.evaluate() == []
    listed = engine.list(10)
    assert [a.state for a in listed.firing] == [telemetry_pb2.ALERT_STATE_FIRING]
    assert listed.firing[0].value == 1.0 and listed.firing[0].threshold == 0.2
    # Successes dilute the rate below the bound: resolved, once.
    await fail(store, "balanced", 40, clock.ms, ttft=100.0, ok=True)
    resolved = await engine.evaluate()
    assert [t.status for t in resolved] == ["resolved"] and len(sender.sent) == 4
    assert await engine.evaluate() == []
    listed = engine.list(10)
    assert not listed.firing and listed.resolved[0].resolved_at_ms == clock.ms


async def test_outage_fires_while_the_breaker_is_open():
    engine, sender, clock, store = engine_with([{"name": "down", "kind": "outage", "severity": "critical",
                                                 "webhooks": ["ops"]}])
    await fail(store, "strong", 5, clock.ms)  # consecutive_failures 5 opens it
    fired = await engine.evaluate()
    assert [(t.alert.subject, t.alert.severity) for t in fired] == [("model=strong", "critical")]
    assert [name for name, _ in sender.sent] == ["ops"]  # the rule names its webhook


async def test_latency_reads_the_rules_percentile():
    engine, _, clock, store = engine_with([{"name": "slow", "kind": "latency", "percentile": 50, "above_ms": 1000,
                                            "min_samples": 5}])
    await fail(store, "fast-cheap", 10, clock.ms, ttft=1500.0, ok=True)
    await fail(store, "balanced", 10, clock.ms, ttft=500.0, ok=True)
    fired = await engine.evaluate()
    assert [(t.alert.subject, t.alert.value) for t in fired] == [("model=fast-cheap", 1500.0)]


def summaries(route: str, n: int, attempts: int, tenant: str = "", cost: float = 0.0, project: str = ""):
    out = []
    for _ in range(n):
        summary = telemetry_pb2.RequestSummary(route=route, tenant=tenant, cost_usd=cost, project=project)
        for _ in range(attempts):
            summary.final.attempts.add(model="flaky")
        out.append(summary)
    return out


async def test_failover_rate_counts_requests_with_more_than_one_attempt_in_the_window():
    engine, _, clock, _ = engine_with([{"name": "failovers", "kind": "failover_rate", "above": 0.3,
                                        "window_s": 10, "min_requests": 10, "routes": ["cheap"]}])
    engine.observe_requests(summaries("cheap", 6, 1) + summaries("cheap", 3, 2))
    assert await engine.evaluate() == []  # 9 requests < 10
    engine.observe_requests(summaries("cheap", 1, 3))
    fired = await engine.evaluate()
    assert [(t.alert.subject, t.alert.value) for t in fired] == [("route=cheap", 0.4)]
    clock.ms += 10_000  # the window moved past them
    assert [t.status for t in await engine.evaluate()] == ["resolved"]


@pytest.mark.parametrize("fraction, fires", [(0.5, True), (0.9, False)])
async def test_budget_fires_past_its_fraction_for_each_tenant_of_a_star_budget(fraction, fires):
    engine, _, _, _ = engine_with([{"name": "budget", "kind": "budget", "fraction": fraction}])
    # per-tenant-daily: $25 a day for each tenant.
    engine.observe_requests(summaries("auto", 10, 1, tenant="acme", cost=1.5))
    engine.observe_requests(summaries("auto", 10, 1, tenant="other", cost=0.1))
    fired = await engine.evaluate()
    assert [(t.alert.subject, round(t.alert.value, 2)) for t in fired] == (
        [("budget=per-tenant-daily/tenant=acme", 0.6)] if fires else [])


async def test_budget_rule_for_one_budget_and_the_next_period_resolves():
    budgets = [{"name": "acme-day", "tenant": "acme", "period": "day", "limit_usd": 1.0},
               {"name": "proj", "tenant": "*", "project": "*", "period": "month", "limit_usd": 100.0}]
    engine, _, clock, _ = engine_with([{"name": "b", "kind": "budget", "fraction": 0.8, "budget": "acme-day"}],
                                      budgets=budgets)
    assert await engine.evaluate() == []  # the fixed account is known before any spend, at 0
    engine.observe_requests(summaries("auto", 9, 1, tenant="acme", cost=0.1, project="p"))
    assert [t.alert.subject for t in await engine.evaluate()] == ["budget=acme-day/tenant=acme"]
    clock.ms += 24 * 3600 * 1000  # a new day: nothing spent yet
    assert [t.status for t in await engine.evaluate()] == ["resolved"]


async def test_no_rules_cost_nothing_per_report():
    engine, _, _, _ = engine_with([])
    engine.observe_requests(summaries("cheap", 100, 2, tenant="acme", cost=1.0))
    assert engine.failovers.routes() == [] and engine.spend_tally.pairs == set()
    assert await engine.evaluate() == []


async def test_metrics_show_alerts_firing_per_rule_and_deliveries_by_outcome():
    from prometheus_client import CollectorRegistry, generate_latest

    from routemesh.telemetry.alerting.delivery import WebhookSender
    from routemesh.telemetry.alerting.metrics import register_alert_metrics

    engine, _, clock, store = engine_with([{"name": "down", "kind": "outage", "severity": "critical"},
                                           {"name": "errors", "kind": "error_rate"}])
    engine.sender = WebhookSender()  # counts only; nothing is submitted before the scrape
    registry = CollectorRegistry()
    register_alert_metrics(registry, engine)
    await fail(store, "strong", 5, clock.ms)
    engine.sender.counts["retried"] += 2
    engine.sender.submit = lambda *args: True  # type: ignore[method-assign]
    await engine.evaluate()
    text = generate_latest(registry).decode()
    assert 'routemesh_alerts_firing{rule="down",severity="critical"} 1.0' in text
    assert 'routemesh_alerts_firing{rule="errors",severity="warning"} 0.0' in text
    assert 'routemesh_alert_deliveries_total{outcome="retried"} 2.0' in text
    assert 'routemesh_alert_deliveries_total{outcome="delivered"} 0.0' in text


def test_the_cli_lists_firing_then_resolved_alerts_and_top_shows_the_firing_ones():
    from routemesh.alerts_cli import render
    from routemesh.top import render as render_top

    reply = telemetry_pb2.ListAlertsResponse(
        firing=[telemetry_pb2.Alert(rule="down", severity="critical", subject="model=strong", started_at_ms=T0,
                                    summary="strong: circuit breaker open")],
        resolved=[telemetry_pb2.Alert(rule="slow", subject="model=balanced", started_at_ms=T0 - 600_000,
                                      resolved_at_ms=T0 - 60_000, summary="balanced: TTFT p90 2500 ms")])
    assert render(reply, T0 + 90_000).splitlines() == [
        "firing: 1",
        "  CRITICAL down [model=strong] for 90s: strong: circuit breaker open",
        "",
        "resolved lately:",
        "  slow [model=balanced] 2m ago, after 9m: balanced: TTFT p90 2500 ms"]
    table = render_top(telemetry_pb2.GetSnapshotResponse(), reply)
    assert table.endswith("alerts firing: 1\n  critical: strong: circuit breaker open")
    assert "alerts" not in render_top(telemetry_pb2.GetSnapshotResponse(), telemetry_pb2.ListAlertsResponse())
