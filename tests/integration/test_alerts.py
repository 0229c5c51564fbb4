"""Alerts end to end: the simulated provider's faults fire the policy's rules, a local receiver gets each firing and
resolved notification exactly once (JSON and Slack), deliveries are retried, and chats never wait for them."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from routemesh.cli import main
from routemesh.client import AsyncRouterClient
from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc
from tests.chaos.conftest import policy_text
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE, SimAdmin
from tests.webhook_receiver import Delivery, WebhookReceiver

pytestmark = pytest.mark.integration

TOKEN = "alert-t0ken"
EVALUATE_S = 0.5
WINDOW_S = 8  # telemetry's window: error rates and latency forget a fault this fast
# (rule, subject) of every alert the faults should fire.
EXPECTED = {("down", "model=fast-cheap"), ("errors", "model=flaky"), ("slow", "model=long-context"),
            ("failovers", "route=flaky-route"), ("budget", "budget=tiny/tenant=budgeted")}
# The budget only grows within its day: it fires and stays firing.
RESOLVING = EXPECTED - {("budget", "budget=tiny/tenant=budgeted")}


def alert_policy(receiver_url: str) -> dict[str, Any]:
    doc = yaml.safe_load(load_default_policy_text())
    # Only breakers that every sample of a window opens (the outage); the flaky model's errors never open one.
    doc["health"] = {"max_error_rate": 1.0, "min_samples": 1_000_000,
                     "circuit": {"consecutive_failures": 1_000_000, "failure_rate": 1.0, "min_samples": 8,
                                 "window_s": 5, "open_s": 0.5, "max_open_s": 2, "half_open_probes": 2,
                                 "probe_fraction": 1.0, "ramp_s": 0}}
    once = {"max_tries_per_model": 1, "backoff_initial_ms": 0}
    doc["routes"].update({
        "down-route": {"strategy": "ordered", "models": ["fast-cheap"], "fallbacks": ["balanced"], "reliability": once},
        "flaky-route": {"strategy": "ordered", "models": ["flaky"], "fallbacks": ["balanced"], "reliability": once},
        "slow-route": {"strategy": "ordered", "models": ["long-context"]},
        "control": {"strategy": "ordered", "models": ["strong"]},
        "budget-route": {"strategy": "ordered", "models": ["balanced"]},
    })
    doc["budgets"] = [{"name": "tiny", "tenant": "budgeted", "period": "day", "limit_usd": 0.0008}]
    doc["alerts"] = {
        "evaluate_every_s": EVALUATE_S,
        "webhooks": [
            {"name": "ops", "url": f"{receiver_url}/ops", "headers": {"Authorization": "Bearer ${ROUTEMESH_POLICY_TOKEN}"}},
            {"name": "chat", "url": f"{receiver_url}/slack", "format": "slack", "timeout_s": 5},
        ],
        "rules": [
            {"name": "down", "kind": "outage", "severity": "critical", "models": ["fast-cheap"]},
            {"name": "errors", "kind": "error_rate", "above": 0.3, "for_s": 1, "min_samples": 10, "models": ["flaky"]},
            {"name": "slow", "kind": "latency", "percentile": 50, "above_ms": 800, "for_s": 1, "min_samples": 3,
             "models": ["long-context"]},
            {"name": "failovers", "kind": "failover_rate", "above": 0.3, "window_s": 4, "min_requests": 8,
             "for_s": 1, "routes": ["flaky-route"]},
            {"name": "budget", "kind": "budget", "fraction": 0.5, "budget": "tiny", "severity": "warning"},
        ],
    }
    return doc


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def alert_mesh(tmp_path_factory, redis_prefix, receiver) -> Iterator[Mesh]:
    path = tmp_path_factory.mktemp("alerts-policy") / "policy.yaml"
    path.write_text(policy_text(alert_policy(receiver.url)))
    mesh = Mesh(MeshLayout.free(), policy=str(path), redis_url=REDIS_URL, redis_prefix=f"{redis_prefix}alerts:",
                sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("alerts-logs"),
                extra_env={"ROUTEMESH_GRACE_S": "2", "ROUTEMESH_POLICY_TOKEN": TOKEN},
                extra_args={"telemetry": ["--window-s", str(WINDOW_S)]})
    mesh.start()
    yield mesh
    mesh.stop()


def keyed(delivery: Delivery) -> tuple[str, str, str]:
    """(status, rule, subject) of a notification in either shape."""
    if "alerts" in delivery.body:
        labels = delivery.body["alerts"][0]["labels"]
        return delivery.body["status"], labels["rule"], labels["subject"]
    fields = {f["title"]: f["value"] for f in delivery.body["attachments"][0]["fields"]}
    status = "firing" if "[FIRING]" in delivery.body["text"] else "resolved"
    return status, fields["Rule"], fields["Subject"]


def notified(receiver: WebhookReceiver, path: str, status: str) -> set[tuple[str, str]]:
    return {(rule, subject) for s, rule, subject in map(keyed, receiver.accepted(path)) if s == status}


class Traffic:
    """Requests to several routes at a steady rate until stopped; the control route's latencies are kept."""

    def __init__(self, address: str):
        self.address = address
        self.control_ms: list[float] = []
        self.failures: Counter[str] = Counter()
        self.completed = 0

    async def _one(self, client: AsyncRouterClient, route: str, metadata: dict[str, str]) -> None:
        started = time.perf_counter()
        try:
            result = await client.complete(f"hello {route}", model=route, max_tokens=8, metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - counted: the budget route ends refused, as it should
            self.failures[f"{route}: {type(exc).__name__}"] += 1
            return
        self.completed += 1
        if route == "control":
            self.control_ms.append((time.perf_counter() - started) * 1000)
        if result.final is None or not result.final.model:
            self.failures[f"{route}: no final"] += 1

    async def run_until(self, done: Callable[[], bool], timeout_s: float, *, budget: bool = False) -> float:
        """Send every 0.1 s until `done()`; the seconds it took (fails at the timeout)."""
        started = time.monotonic()
        tasks: set[asyncio.Task] = set()
        async with AsyncRouterClient(self.address, timeout=30) as client:
            while not done():
                assert time.monotonic() - started < timeout_s, "timed out waiting for the notifications"
                for route in ("down-route", "flaky-route", "flaky-route", "slow-route", "control"):
                    task = asyncio.create_task(self._one(client, route, {}))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if budget:
                    task = asyncio.create_task(self._one(client, "budget-route", {"tenant": "budgeted"}))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            await asyncio.gather(*tasks)
        return elapsed


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def test_faults_fire_and_resolve_each_alert_once_in_both_shapes(alert_mesh, receiver, capsys):
    sim = SimAdmin(alert_mesh.layout.sim_url)
    traffic = Traffic(alert_mesh.layout.address("router"))
    # A clean start: the flaky model's own faults are part of this test's script.
    sim.patch("sim-flaky", error_rate=0.0, rate_limit_rate=0.0, cut_rate=0.0)
    await traffic.run_until(lambda: traffic.completed >= 40, 20)
    baseline = list(traffic.control_ms)
    assert not receiver.attempts(), "no alert before any fault"

    # Faults: one model down, one failing 60 %, one slow (1.5 s to the first token at this time scale).
    receiver.fail_next = 3  # the first deliveries are refused: retried with backoff
    fault_at, fault_wall_ms = time.monotonic(), time.time() * 1000
    sim.patch("sim-fast", outage=True)
    sim.patch("sim-flaky", error_rate=0.6)
    sim.patch("sim-long", ttft_ms=30_000)
    # Until the tiny budget refuses too (the metric contract test below needs a rejection).
    fired_in = await traffic.run_until(
        lambda: notified(receiver, "/ops", "firing") >= EXPECTED and notified(receiver, "/slack", "firing") >= EXPECTED
        and any(key.startswith("budget-route") for key in traffic.failures), 45, budget=True)
    print(f"\n[alerts] all five alerts firing at both webhooks {fired_in:.1f} s after the faults")
    # When each alert's first delivery attempt arrived (the refused ones delay what queues behind them).
    firing_at = {key: min(d.at for d in receiver.attempts() if keyed(d) == ("firing", *key)) for key in EXPECTED}
    assert sum(1 for d in receiver.attempts() if d.status == 500) == 3

    with alert_mesh.channel("telemetry") as channel:
        listed = telemetry_pb2_grpc.TelemetryServiceStub(channel).ListAlerts(telemetry_pb2.ListAlertsRequest(),
                                                                              timeout=5)
    assert {(a.rule, a.subject) for a in listed.firing} >= EXPECTED
    print("[alerts] from the faults to firing (telemetry's start time): " + ", ".join(
        f"{a.rule} {(a.started_at_ms - fault_wall_ms) / 1000:.1f} s" for a in sorted(listed.firing,
                                                                                  key=lambda a: a.started_at_ms)))
    scraped = httpx.get(alert_mesh.layout.metrics_url("telemetry"), timeout=5).text
    assert 'routemesh_alerts_firing{rule="down",severity="critical"} 1.0' in scraped
    assert 'routemesh_alert_deliveries_total{outcome="retried"}' in scraped

    # Faults removed; the receiver is slow now (1 s per delivery): chats must not notice.
    receiver.delay_s = 1.0
    recovery_start = len(traffic.control_ms)
    sim.patch("sim-fast", outage=False)
    sim.patch("sim-flaky", error_rate=0.0)
    sim.patch("sim-long", ttft_ms=250)
    resolved_in = await traffic.run_until(
        lambda: notified(receiver, "/ops", "resolved") >= RESOLVING
        and notified(receiver, "/slack", "resolved") >= RESOLVING, 45)
    print(f"[alerts] the four transient alerts resolved at both webhooks {resolved_in:.1f} s after the fix")
    await asyncio.sleep(4 * EVALUATE_S + 1.5)  # time for any duplicate to show up

    # Exactly one firing and one resolved per alert and webhook (none for the budget, still past its fraction).
    for path in ("/ops", "/slack"):
        counts = Counter(keyed(d) for d in receiver.accepted(path))
        assert {key: n for key, n in counts.items() if n != 1} == {}, counts
        assert {(rule, subject) for status, rule, subject in counts if status == "firing"} == EXPECTED
        assert {(rule, subject) for status, rule, subject in counts if status == "resolved"} == RESOLVING

    # The JSON shape (Alertmanager-like), with the header telemetry expanded from its environment.
    ops = [d for d in receiver.accepted("/ops") if keyed(d) == ("resolved", "down", "model=fast-cheap")][0]
    assert ops.headers["Authorization"] == f"Bearer {TOKEN}"
    alert = ops.body["alerts"][0]
    assert alert["labels"]["severity"] == "critical" and alert["endsAt"] > alert["startsAt"]
    # The Slack shape.
    slack = [d for d in receiver.accepted("/slack") if keyed(d)[0] == "firing"][0].body
    assert slack["text"].startswith(":rotating_light: [FIRING]") and slack["attachments"][0]["color"]

    with alert_mesh.channel("telemetry") as channel:
        listed = telemetry_pb2_grpc.TelemetryServiceStub(channel).ListAlerts(telemetry_pb2.ListAlertsRequest(),
                                                                              timeout=5)
    assert {(a.rule, a.subject) for a in listed.firing} == {("budget", "budget=tiny/tenant=budgeted")}
    assert {(a.rule, a.subject) for a in listed.resolved} >= RESOLVING
    assert main(["alerts", "--telemetry", alert_mesh.layout.address("telemetry")]) == 0
    printed = capsys.readouterr().out
    assert "firing: 1\n  WARNING  budget [budget=tiny/tenant=budgeted]" in printed and "resolved lately:" in printed

    # Chats never waited on deliveries: the control route as fast while the receiver was slow as before.
    slow_receiver = traffic.control_ms[recovery_start:]
    print(f"[alerts] control route p50 {p50(baseline):.0f} ms before, {p50(slow_receiver):.0f} ms with a slow "
          "receiver; from the faults to each alert's first delivery: "
          + ", ".join(f"{rule} {at - fault_at:.1f} s" for (rule, _), at in sorted(firing_at.items(),
                                                                                   key=lambda kv: kv[1])))
    assert p50(slow_receiver) < p50(baseline) * 2 + 100
    assert not {k: v for k, v in traffic.failures.items() if not k.startswith("budget-route")}, traffic.failures


def test_after_the_faults_every_service_together_exposes_the_whole_metric_contract(alert_mesh):
    """The names deploy/'s rules and dashboard read are what a real mesh serves: after the faults above (errors,
    failovers, budget refusals, alerts), the union of every service's /metrics misses only what this mesh never
    did: it keeps no ledger, nobody called its gateway, and every request ended well on a fallback
    (routemesh_errors_total; tests/unit/test_metrics.py records it)."""
    from tests.metric_contract import missing_from_scrape

    lines: list[str] = []
    for service in alert_mesh.layout.metrics_ports:
        lines += httpx.get(alert_mesh.layout.metrics_url(service), timeout=5).text.splitlines()
    no_ledger = {"routemesh_ledger_backlog_rows", "routemesh_ledger_dropped_rows_total",
                 "routemesh_ledger_written_rows_total", "routemesh_ledger_healthy"}
    assert missing_from_scrape(lines) <= no_ledger | {"routemesh_http_requests_total", "routemesh_errors_total"}
    assert {"routemesh_failovers_total", "routemesh_rejections_total", "routemesh_alerts_firing",
            "routemesh_alert_deliveries_total"}.isdisjoint(missing_from_scrape(lines))
