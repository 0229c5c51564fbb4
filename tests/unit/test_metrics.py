"""The router's metrics without gRPC: what one request records, bounded labels, breakers, budgets, the endpoint."""

from __future__ import annotations

import httpx
import pytest
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from routemesh.common.errors import BudgetExhausted, NoEligibleModel, RateLimited, RelayedError, UpstreamUnavailable
from routemesh.common.metrics import OTHER, BoundedLabel, FunctionCollector, LoopReadings, MetricsServer, new_registry
from routemesh.common.outcomes import AttemptOutcome, FinishStatus
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder
from routemesh.router.admission.budget import BudgetScope, InMemoryBudgetLedger
from routemesh.router.budget_metrics import BudgetReadings
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.strategies import ModelHealthView
from routemesh.router.metrics import RouterMetrics, relayed_attempts
from routemesh.router.request import ChatInput, Finished
from routemesh.v1 import common_pb2
from tests.unit.test_pipeline import POLICY, ScriptedExecutor, _input, _pipeline


def _metrics(max_tenants: int = 100) -> tuple[RouterMetrics, CollectorRegistry, PolicyHolder[RoutingPolicy]]:
    holder: PolicyHolder[RoutingPolicy] = PolicyHolder()
    holder.current = RoutingPolicy.compile(PolicyVersion(POLICY, 7, "d7"))
    registry = new_registry()
    return RouterMetrics(registry, holder, max_tenants), registry, holder


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _relayed(*attempts: str) -> RelayedError:
    error = UpstreamUnavailable("all failed", metadata={f"attempt.{i + 1}": a for i, a in enumerate(attempts)})
    return RelayedError(error.to_status())


def test_bounded_label_keeps_policy_values_and_the_first_others_then_says_other():
    known = {"acme"}
    label = BoundedLabel(lambda: known, max_values=2)
    assert [label(v) for v in ("a", "b", "c", "a", "acme", "")] == ["a", "b", OTHER, "a", "acme", ""]
    known.add("c")
    assert label("c") == "c", "a tenant added to the policy gets its own series at once"


async def test_a_completed_request_records_count_latencies_tokens_and_spend():
    metrics, registry, _ = _metrics()
    pipeline = _pipeline(ScriptedExecutor())
    pipeline.metrics = metrics
    events = [e async for e in pipeline.chat(_input("acme"))]
    finished = events[-1]
    assert isinstance(finished, Finished)
    route, model = "auto", finished.model
    assert _value(registry, "routemesh_requests_total", route=route, model=model, status="complete",
                  tenant="acme") == 1
    for name in ("gen_ai_server_time_to_first_token_seconds", "gen_ai_server_request_duration_seconds",
                 "gen_ai_server_time_per_output_token_seconds"):
        assert _value(registry, f"{name}_count", route=route, gen_ai_response_model=model) == 1, name
    tokens = {"route": route, "gen_ai_response_model": model, "tenant": "acme"}
    assert _value(registry, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **tokens) == 10
    assert _value(registry, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **tokens) == 2
    assert _value(registry, "routemesh_spend_usd_total", route=route, model=model, tenant="acme") == \
        pytest.approx(finished.cost_usd)
    assert _value(registry, "routemesh_policy_version") == 7
    assert registry.get_sample_value("process_cpu_seconds_total") is not None


async def test_a_request_failing_before_its_first_token_is_an_error_without_a_model():
    metrics, registry, _ = _metrics()
    pipeline = _pipeline(ScriptedExecutor(fail=True))
    pipeline.metrics = metrics
    with pytest.raises(UpstreamUnavailable):
        _ = [e async for e in pipeline.chat(_input("acme"))]
    assert _value(registry, "routemesh_requests_total", route="auto", model="", status="failed", tenant="acme") == 1
    assert _value(registry, "routemesh_errors_total", route="auto", model="", reason="all_candidates_failed") == 1
    assert _value(registry, "gen_ai_server_time_to_first_token_seconds_count", route="auto",
                  gen_ai_response_model="") == 0


async def test_a_refused_request_is_rejected_with_its_reason_and_no_model():
    metrics, registry, _ = _metrics()
    pipeline = _pipeline(ScriptedExecutor())
    pipeline.metrics = metrics
    # cheap takes one request a minute, and acme's budget affords only cheap: the second is refused.
    _ = [e async for e in pipeline.chat(_input("acme"))]
    with pytest.raises((RateLimited, BudgetExhausted)) as refused:
        _ = [e async for e in pipeline.chat(_input("acme"))]
    reason = refused.value.reason.lower()
    assert reason in ("rate_limited", "budget_exhausted")
    assert _value(registry, "routemesh_requests_total", route="auto", model="", status="rejected", tenant="acme") == 1
    assert _value(registry, "routemesh_rejections_total", reason=reason, route="auto", tenant="acme") == 1


def test_rejections_before_a_policy_or_for_an_unknown_route_have_no_route():
    metrics, registry, holder = _metrics()
    metrics.rejected(holder.current, ChatInput(messages=_input().messages, model="nope"), NoEligibleModel("none"))
    metrics.rejected(None, _input("acme"), NoEligibleModel("none"))
    assert _value(registry, "routemesh_rejections_total", reason="no_eligible_model", route="", tenant="") == 2


def test_failovers_count_failed_attempts_followed_by_another_and_errors_count_failed_requests():
    metrics, registry, holder = _metrics()
    decision = _decision(holder)
    attempts = [common_pb2.Attempt(model="cheap", outcome=AttemptOutcome.RATE_LIMITED),
                common_pb2.Attempt(model="cheap", outcome=AttemptOutcome.HEDGE_LOST),
                common_pb2.Attempt(model="pricey", outcome=AttemptOutcome.TRUNCATED)]
    finished = Finished(status=FinishStatus.TRUNCATED_UPSTREAM, model="pricey", attempts=attempts,
                        usage=common_pb2.Usage(input_tokens=5, output_tokens=1))
    metrics.served(holder.current, _input("acme"), decision, finished, 0.5, 0.1, None)
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="rate_limited") == 1
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="hedge_lost") == 0
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="truncated") == 0, "the last attempt"
    assert _value(registry, "routemesh_errors_total", route="auto", model="pricey", reason="truncated_upstream") == 1
    assert _value(registry, "gen_ai_server_time_per_output_token_seconds_count", route="auto",
                  gen_ai_response_model="pricey") == 0, "one output token has no time per token"
    # Every attempt failed before a token: the executor's error lists them; all but the last failed over.
    error = _relayed("cheap:timeout", "pricey:upstream_error", "pricey:connect_error")
    assert relayed_attempts(error) == ["timeout", "upstream_error", "connect_error"]
    metrics.served(holder.current, _input("acme"), decision, None, 0.5, None, error)
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="timeout") == 1
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="upstream_error") == 1
    assert _value(registry, "routemesh_failovers_total", route="auto", reason="connect_error") == 0
    assert relayed_attempts(RelayedError(status_pb2.Status(code=14, message="x"))) == []


def test_a_caller_going_away_is_cancelled_not_an_error():
    import asyncio

    metrics, registry, holder = _metrics()
    metrics.served(holder.current, _input("acme"), _decision(holder), None, 0.2, 0.05, asyncio.CancelledError())
    assert _value(registry, "routemesh_requests_total", route="auto", model="", status="cancelled", tenant="acme") == 1
    assert _value(registry, "routemesh_errors_total", route="auto", model="", reason="cancelled") == 0


def test_tenants_past_the_bound_collapse_to_other():
    metrics, registry, holder = _metrics(max_tenants=2)
    for tenant in ("t1", "t2", "t3", "t4"):
        metrics.rejected(holder.current, _input(tenant), NoEligibleModel("none"))
    tenants = {s.labels["tenant"] for f in registry.collect() if f.name == "routemesh_rejections" for s in f.samples}
    assert tenants == {"t1", "t2", OTHER}


def test_breakers_and_in_flight_streams_are_read_at_scrape_time():
    metrics, registry, _ = _metrics()
    health = {"cheap": ModelHealthView(), "pricey": ModelHealthView(circuit_open=True)}
    streams = [3]
    metrics.watch_breakers(registry, lambda: health)
    metrics.watch_streams(lambda: streams[0])
    assert _value(registry, "routemesh_breaker_state", model="pricey") == 2
    assert _value(registry, "routemesh_inflight_streams") == 3
    health["pricey"] = ModelHealthView(circuit_half_open=True)
    streams[0] = 0
    assert _value(registry, "routemesh_breaker_state", model="pricey") == 1
    assert _value(registry, "routemesh_inflight_streams") == 0


async def test_budgets_show_their_limit_and_the_least_any_account_has_left():
    metrics, registry, holder = _metrics()
    ledger = InMemoryBudgetLedger()
    readings = BudgetReadings(holder, ledger, metrics.accounts)
    registry.register(FunctionCollector("budgets", readings.collect))
    metrics.rejected(holder.current, _input("acme"), NoEligibleModel("none"))
    metrics.rejected(holder.current, _input("globex"), NoEligibleModel("none"))
    assert metrics.accounts == {("acme", ""), ("globex", "")}
    acme = BudgetScope(budget="small", key="tenant=acme", period="month", limit_usd=0.05)
    await ledger.settle(await ledger.reserve([acme], 0.01), 0.02)
    await LoopReadings({"budgets": readings.read}).refresh()
    assert _value(registry, "routemesh_budget_limit_usd", budget="small") == 0.05
    assert _value(registry, "routemesh_budget_remaining_usd", budget="small") == pytest.approx(0.03)


def test_a_failing_collector_leaves_the_rest_of_the_scrape():
    registry = new_registry()

    def broken() -> list:
        raise RuntimeError("boom")

    registry.register(FunctionCollector("broken", broken))
    assert registry.get_sample_value("process_cpu_seconds_total") is not None


def test_the_endpoint_serves_the_registry_on_a_free_port():
    registry = new_registry()
    server = MetricsServer(registry, "127.0.0.1:0")
    server.start()
    try:
        text = httpx.get(server.url, timeout=5).text
    finally:
        server.stop()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_gc_objects_collected"} <= names
    with pytest.raises(SystemExit):
        MetricsServer(registry, "no-port")


def _decision(holder: PolicyHolder[RoutingPolicy]):
    from routemesh.classifier.features import classify
    from routemesh.router.decision.planner import Plan
    from routemesh.router.request import Classified, Decision

    plan = Plan(models=["cheap", "pricey"], strategy="cost", reason="", route="auto")
    return Decision("a" * 32, plan, "p", Classified(classify([("user", "hi")]), "router"), 7, "d7", "t")
