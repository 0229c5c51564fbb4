"""The router's Prometheus instruments, and how one finished or refused request is recorded in them.

Recorded once per request, after its answer (from RequestPipeline.chat's last step, off the token path),
from what the request's summary is built from too: the decision's route, the Finished event's model, status,
usage, cost and attempts, and the pipeline's clock. Gauges that reflect state (breakers, budgets, in-flight
streams, the policy version) are read when Prometheus scrapes.

Label values are bounded: routes and models come from the policy ("" for a request pinned to a model, which
has no route; "" for a model when none served); statuses and reasons are enums; a tenant the policy does
not name keeps its own series only among the first `max_tenants` seen, later ones read "other"
(common.metrics.BoundedLabel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from routemesh.common.errors import RelayedError, RoutemeshError, error_info
from routemesh.common.metrics import (
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    DEFAULT_MAX_VALUES,
    LATENCY_BUCKETS,
    TOKEN_BUCKETS,
    BoundedLabel,
    FunctionCollector,
    breaker_family,
    policy_version_gauge,
)
from routemesh.common.outcomes import REQUEST_ERROR_STATUSES, AttemptOutcome, FinishStatus
from routemesh.common.policy_watch import PolicyHolder
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.strategies import ModelHealthView
from routemesh.router.request import ChatInput, Decision, Finished

REJECTED = "rejected"
# Budget accounts (tenant, project) whose remaining budget the budget gauges follow, at most.
MAX_BUDGET_ACCOUNTS = 1000
# Attempts that did not fail: one followed by another is not a failover.
NOT_FAILURES = frozenset(AttemptOutcome.label_of(outcome) for outcome in (
    AttemptOutcome.SUCCESS, AttemptOutcome.HEDGE_LOST, AttemptOutcome.CANCELLED, AttemptOutcome.UNSPECIFIED)) | {""}


def breaker_value(view: ModelHealthView) -> int:
    return BREAKER_OPEN if view.circuit_open else BREAKER_HALF_OPEN if view.circuit_half_open else BREAKER_CLOSED


def error_reason(exc: BaseException) -> str:
    """A failure's reason as a label: the ErrorReason lowercased, "cancelled" for a caller that went away."""
    if isinstance(exc, RoutemeshError):
        return exc.reason.lower()
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "internal"


def relayed_attempts(exc: BaseException | None) -> list[str]:
    """The outcome labels of the attempts an executor's error lists ("attempt.N": "model:outcome"), in order."""
    if not isinstance(exc, RelayedError):
        return []
    info = error_info(list(exc.status.details))
    if info is None:
        return []
    listed = sorted((int(key.partition(".")[2]), value) for key, value in info.metadata.items()
                    if key.startswith("attempt.") and key.partition(".")[2].isdigit())
    return [value.rpartition(":")[2] for _, value in listed]


class _Series:
    """The children of one (route, model, tenant): labels() once, then plain method calls per request."""

    __slots__ = ("ttft", "tpot", "duration", "input_tokens", "output_tokens", "spend")

    def __init__(self, metrics: RouterMetrics, route: str, model: str, tenant: str):
        self.ttft = metrics.ttft.labels(route, model)
        self.tpot = metrics.tpot.labels(route, model)
        self.duration = metrics.duration.labels(route, model)
        self.input_tokens = metrics.tokens.labels("input", route, model, tenant)
        self.output_tokens = metrics.tokens.labels("output", route, model, tenant)
        self.spend = metrics.spend.labels(route, model, tenant)


class RouterMetrics:
    """The router's instruments on `registry`; `served` and `rejected` record one request each."""

    def __init__(self, registry: CollectorRegistry, holder: PolicyHolder[RoutingPolicy],
                 max_tenants: int = DEFAULT_MAX_VALUES):
        self.holder = holder
        self.tenants = BoundedLabel(self._policy_tenants, max_tenants)
        # Budget accounts requests drew on, as (tenant, project), for the budget gauges (router.budget_metrics).
        self.accounts: set[tuple[str, str]] = set()
        self.requests = Counter("routemesh_requests", "Chat requests by how they ended (rejected: refused before "
                                "any model)", ["route", "model", "status", "tenant"], registry=registry)
        self.rejections = Counter("routemesh_rejections", "Requests refused before any model served them",
                                  ["reason", "route", "tenant"], registry=registry)
        model = ["route", "gen_ai_response_model"]
        self.ttft = Histogram("gen_ai_server_time_to_first_token_seconds", "Time from request to its first token",
                              model, buckets=LATENCY_BUCKETS, registry=registry)
        self.tpot = Histogram("gen_ai_server_time_per_output_token_seconds", "Time per output token after the first",
                              model, buckets=LATENCY_BUCKETS, registry=registry)
        self.duration = Histogram("gen_ai_server_request_duration_seconds", "Time from request to its last event",
                                  model, buckets=LATENCY_BUCKETS, registry=registry)
        self.tokens = Histogram("gen_ai_client_token_usage", "Tokens per request, input or output (its sum: the "
                                "total)", ["gen_ai_token_type", *model, "tenant"], buckets=TOKEN_BUCKETS,
                                registry=registry)
        self.spend = Counter("routemesh_spend_usd", "Cost of requests in USD", ["route", "model", "tenant"],
                             registry=registry)
        self.failovers = Counter("routemesh_failovers", "Failed attempts that were followed by another attempt",
                                 ["route", "reason"], registry=registry)
        self.errors = Counter("routemesh_errors", "Requests that ended in an error, by its reason",
                              ["route", "model", "reason"], registry=registry)
        self.inflight = Gauge("routemesh_inflight_streams", "Chat requests in progress in this router",
                              registry=registry)
        policy_version_gauge(registry, lambda: holder.current.version if holder.current is not None else 0)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._counted: dict[tuple[tuple[str, str, str], str], Counter] = {}

    def watch_streams(self, count: Callable[[], int]) -> None:
        """Read routemesh_inflight_streams from `count` at scrape time (the servicer counts its streams)."""
        self.inflight.set_function(lambda: float(count()))

    def watch_breakers(self, registry: CollectorRegistry, health: Callable[[], dict[str, ModelHealthView]]) -> None:
        """routemesh_breaker_state from the health snapshot the router holds, read at scrape time."""
        registry.register(FunctionCollector("breakers", lambda: [
            breaker_family((name, breaker_value(view)) for name, view in list(health().items()))]))

    def _policy_tenants(self) -> Iterable[str]:
        policy = self.holder.current
        return policy.tenants if policy is not None else ()

    def _tenant(self, policy: RoutingPolicy | None, request: ChatInput) -> str:
        """The request's tenant as a label; notes its budget account when the policy has budgets."""
        if policy is None:
            return ""
        keys, metadata = policy.request_keys, request.metadata
        tenant = metadata.get(keys.tenant, "")
        if policy.budgets and tenant and len(self.accounts) < MAX_BUDGET_ACCOUNTS:
            self.accounts.add((tenant, metadata.get(keys.project, "")))
        return self.tenants(tenant)

    def rejected(self, policy: RoutingPolicy | None, request: ChatInput, error: BaseException) -> None:
        """A request refused before any model served it (validation, keys, no eligible model, limits, budgets)."""
        target = request.model or (policy.default_route if policy is not None else "")
        route = target if policy is not None and target in policy.routes else ""
        tenant = self._tenant(policy, request)
        self.requests.labels(route, "", REJECTED, tenant).inc()
        self.rejections.labels(error_reason(error), route, tenant).inc()

    def served(self, policy: RoutingPolicy, request: ChatInput, decision: Decision, finished: Finished | None,
               duration_s: float, ttft_s: float | None, failure: BaseException | None) -> None:
        """A request that got its decision: how it ended, its latencies, tokens, cost, failovers and errors.

        `ttft_s` is None when no token came; `failure` what ended it when no Finished did (the caller going
        away, every candidate failing before the first token).
        """
        route = decision.plan.route
        tenant = self._tenant(policy, request)
        model = finished.model if finished is not None else ""
        key = (route, model, tenant)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, route, model, tenant)
        series.duration.observe(duration_s)
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        if finished is None:
            reason = error_reason(failure) if failure is not None else "failed"
            self.requests.labels(route, "", "cancelled" if reason == "cancelled" else FinishStatus.FAILED.label,
                                 tenant).inc()
            if reason != "cancelled":
                self.errors.labels(route, "", reason).inc()
            self._failovers(route, relayed_attempts(failure)[:-1])
            return
        status = FinishStatus.label_of(finished.status)
        counted = self._counted.get((key, status))
        if counted is None:
            counted = self._counted[(key, status)] = self.requests.labels(route, model, status, tenant)
        counted.inc()
        usage = finished.usage
        if usage is not None:
            series.input_tokens.observe(usage.input_tokens)
            series.output_tokens.observe(usage.output_tokens)
            if ttft_s is not None and usage.output_tokens > 1:
                series.tpot.observe((duration_s - ttft_s) / (usage.output_tokens - 1))
        if finished.cost_usd > 0:
            series.spend.inc(finished.cost_usd)
        if finished.status in REQUEST_ERROR_STATUSES:
            self.errors.labels(route, model, status).inc()
        attempts = finished.attempts
        if len(attempts) > 1:
            self._failovers(route, [AttemptOutcome.label_of(a.outcome) for a in attempts[:-1]])

    def _failovers(self, route: str, outcomes: Sequence[str]) -> None:
        """One failover per failed attempt (by its outcome label) that another attempt followed."""
        for outcome in outcomes:
            if outcome not in NOT_FAILURES:
                self.failovers.labels(route, outcome).inc()
