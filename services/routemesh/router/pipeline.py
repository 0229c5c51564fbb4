"""One request's lifecycle in the router: classify → decide → admit → execute → settle → report."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.errors import LedgerNotConfigured, NotReady, RoutemeshError, Unauthenticated
from routemesh.common.keys import KeyCache, KeyRecord, KeyUsage
from routemesh.common.messages import ROLE_NAMES
from routemesh.common.outcomes import REQUEST_ERROR_STATUSES, FinishStatus
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.reporter import TelemetryReporter
from routemesh.common.tracing import join, set_attributes, trace_id_hex, tracer
from routemesh.router.admission.guard import Admission, Admitted, KeyQuota, SpendGuard, budget_scopes
from routemesh.router.affinity import ConversationAffinity
from routemesh.router.clients.classifier import FALLBACK_SOURCE, FeatureSource
from routemesh.router.clients.executor import ExecutorClient, execute_request
from routemesh.router.clients.feedback import FeedbackClient
from routemesh.router.clients.health import Health, HealthSource, HealthWatch
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import DecisionState, Plan, plan_request
from routemesh.router.convert import decision_to_proto, final_to_proto
from routemesh.router.key_usage import KeyUsageRecorder
from routemesh.router.metrics import RouterMetrics
from routemesh.router.request import ChatInput, Classified, Decision, Delta, Finished, conversation_sha256, validate
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2


# Request metadata naming the API key a request was made with (set by the router, never trusted from callers).
KEY_ID_METADATA = "routemesh.key_id"


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What a decision reads besides the features: live health, the conversation's model, budget state."""

    health: Health
    health_fresh: bool
    sticky_model: str = ""
    budget_soft: bool = False


class stage:  # noqa: N801 - used like a function: `with stage(name) as span`
    """A stage's span; an error leaving the stage marks it. `current` makes downstream calls its children.

    A class rather than a @contextmanager generator, and no context attached for a span that records
    nothing (tracing off): this runs several times in every request.
    """

    __slots__ = ("span", "_token")

    def __init__(self, name: str, current: bool = False):
        self.span = tracer().start_span(name)
        self._token = otel_context.attach(trace.set_span_in_context(self.span)) \
            if current and self.span.is_recording() else None

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        if exc is not None and isinstance(exc, Exception):
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end()


def stored_text(policy: RoutingPolicy, route: str, data_class: str,
                messages: Sequence[common_pb2.Message]) -> dict[str, Any]:
    """The summary fields that carry a conversation's text to the ledger: only where the route opts in and the
    request's data class (none, or one the route lists) allows it; else nothing."""
    settings = policy.routes[route].store_text if route in policy.routes else None
    if settings is None or (data_class and data_class not in settings.data_classes):
        return {}
    conversation = [{"role": ROLE_NAMES.get(m.role, str(m.role)), "content": m.content} for m in messages]
    return {"conversation_json": json.dumps(conversation, ensure_ascii=False),
            "text_retention_days": settings.retention_days}


class RequestPipeline:
    """Chat and Explain share the stages, so Explain shows exactly what Chat would do.

    Each stage is a method with its own span that returns a value the next one takes; the Decision is built
    once, after admission (for Explain, after the decision: Explain takes nothing), and never changed.
    Nothing here imports grpc: the servicer converts protos to ChatInput and the events back, the clients
    convert at their own edges, and the caller's deadline reaches downstream calls through common.channels.
    """

    def __init__(self, holder: PolicyHolder[RoutingPolicy], features: FeatureSource, health: HealthSource | HealthWatch,
                 affinity: ConversationAffinity, spend: SpendGuard, executor: ExecutorClient,
                 reporter: TelemetryReporter | None = None, state: DecisionState | None = None,
                 keys: KeyCache | None = None, key_usage: KeyUsageRecorder | None = None,
                 feedback_sink: FeedbackClient | None = None, metrics: RouterMetrics | None = None):
        self.holder = holder
        # Prometheus instruments (router.metrics), recorded once per request after its answer; None: metrics off.
        self.metrics = metrics
        # With keys: every request needs an API key; its tenant, project and scope replace what the request says.
        self.keys = keys
        self.key_usage = key_usage
        # Where callers' feedback goes (telemetry, which keeps the ledger); None: feedback is refused.
        self.feedback_sink = feedback_sink
        self.features = features
        self.health = health
        self.affinity = affinity
        self.spend = spend
        self.executor = executor
        self.reporter = reporter
        self.state = state or DecisionState()

    # ---- the two requests ------------------------------------------------------------------------------

    async def explain(self, request: ChatInput) -> Decision:
        """The decision Chat would make now, without admitting or running it."""
        validate(request)
        policy = self._policy()
        request = await self.authenticate(policy, request)
        decision_id = uuid.uuid4().hex
        classified, inputs = await self.classify(policy, request)
        plan = self.decide(policy, request, classified, inputs, decision_id)
        return self._decision(decision_id, policy, plan, classified, inputs, ())

    async def chat(self, request: ChatInput) -> AsyncIterator[Decision | Delta | Finished]:
        """The Decision, then Deltas, then one Finished; errors before the decision raise."""
        started = time.monotonic()
        policy: RoutingPolicy | None = None
        try:
            validate(request)
            policy = self._policy()
            request = await self.authenticate(policy, request)
        except RoutemeshError as exc:
            if self.metrics is not None:  # before its key was checked, a request's tenant is only a claim
                self.metrics.rejected(policy, request if self.keys is None else replace(request, metadata={}), exc)
            raise
        finished: Finished | None = None
        decision_id = uuid.uuid4().hex
        try:
            try:
                classified, inputs = await self.classify(policy, request)
                plan = self.decide(policy, request, classified, inputs, decision_id)
                admitted = await self.admit(policy, plan, classified, request)
            except RoutemeshError as exc:
                # Refused before any decision (no eligible model, a limit, a budget): a ledger row says why.
                self.report_refused(policy, request, decision_id, exc, started)
                if self.metrics is not None:
                    self.metrics.rejected(policy, request, exc)
                raise
            decision = self._decision(decision_id, policy, admitted.plan, classified, inputs,
                                      tuple(admitted.admission.unchecked))
            first_at = 0.0
            failure: BaseException | None = None
            try:
                async for event in self.execute(policy, request, decision):
                    if isinstance(event, Finished):
                        finished = event
                    elif event is decision:
                        yield event
                        await self._keep_conversation(policy, request, decision)
                        continue
                    elif not first_at:
                        first_at = time.monotonic()
                    yield event
            except BaseException as exc:  # what ended it, for the metrics; raised on unchanged
                failure = exc
                raise
            finally:
                await self.settle(admitted.admission, finished)
                self.report(policy, request, decision, finished, started, first_at)
                if self.metrics is not None:
                    self.metrics.served(policy, request, decision, finished, time.monotonic() - started,
                                        first_at - started if first_at else None, failure)
        finally:
            # Refused requests (a limit, a budget, a model the key may not use) count too, as errors.
            self.count_key_usage(request, finished)

    # ---- the stages ------------------------------------------------------------------------------------

    async def authenticate(self, policy: RoutingPolicy, request: ChatInput) -> ChatInput:
        """With keys on: the request as its API key makes it (tenant, project, allowed models and routes).

        The key decides the tenant: whatever tenant or project the request's metadata claims is replaced, so a
        caller cannot step out of its tenant's allow-list, limits and budget. Verdicts are cached for a few
        seconds (common.keys.KeyCache), which bounds how long a revoked key still works.
        """
        if self.keys is None:
            return request
        record = await self.key_record(request.api_key)
        spec, keys = record.spec, policy.request_keys
        metadata = {**request.metadata, keys.tenant: spec.tenant, KEY_ID_METADATA: record.key_id}
        if spec.project:
            metadata[keys.project] = spec.project
        else:
            metadata.pop(keys.project, None)
        options = replace(request.options, key_models=frozenset(spec.allowed_models) or None,
                          key_routes=frozenset(spec.allowed_routes) or None)
        quota = KeyQuota(record.key_id, spec.rpm, spec.tpm, spec.budget_usd, spec.budget_period)  # type: ignore[arg-type]
        return replace(request, metadata=metadata, options=options, quota=quota)

    async def key_record(self, api_key: str) -> KeyRecord:
        """The active key `api_key` is (keys on); Unauthenticated when there is none or it is not valid."""
        assert self.keys is not None
        record = await self.keys.verify(api_key) if api_key else None
        if record is None:
            raise Unauthenticated("a valid API key is required (gRPC metadata authorization: Bearer rmk_...)"
                                  if not api_key else "the API key is not valid (unknown, revoked or expired)")
        return record

    async def feedback(self, feedback: common_pb2.Feedback, api_key: str) -> common_pb2.FeedbackReceipt:
        """Pass a caller's feedback to telemetry's ledger; with keys on, for its key's tenant's requests only."""
        if self.feedback_sink is None:
            raise LedgerNotConfigured("this router has no telemetry to keep feedback")
        tenant = (await self.key_record(api_key)).spec.tenant if self.keys is not None else ""
        return await self.feedback_sink.record(feedback, tenant)

    async def classify(self, policy: RoutingPolicy, request: ChatInput) -> tuple[Classified, DecisionInputs]:
        """The request's features; the decision's other inputs are gathered meanwhile (outside this stage)."""
        waits = self._input_waits(policy, request)
        # Started before the stage's span is current, so a health query is not drawn as part of classifying.
        pending = [asyncio.ensure_future(w) for w in waits.values()]
        try:
            with stage(semconv.SPAN_CLASSIFY, current=True) as span:
                classified = await self.features.classify(request.messages, policy.quality)
                if span.is_recording():
                    set_attributes(span, {semconv.FEATURES_SOURCE: classified.source,
                                          semconv.REQUEST_TASK_TYPE: classified.features.task_type,
                                          semconv.REQUEST_INPUT_TOKENS: classified.features.input_tokens})
            gathered = dict(zip(waits, await asyncio.gather(*pending), strict=True)) if pending else {}
        finally:
            for task in pending:
                task.cancel()
        health, fresh = gathered["health"] if "health" in gathered else self.health.pushed()  # type: ignore[misc]
        return classified, DecisionInputs(health, fresh, gathered.get("sticky", ""), gathered.get("soft", False))

    def decide(self, policy: RoutingPolicy, request: ChatInput, classified: Classified, inputs: DecisionInputs,
               decision_id: str) -> Plan:
        """The ordered plan: which models may serve, best first, and why."""
        # Not made current: nothing under it starts spans, and attaching a context costs time per request.
        with stage(semconv.SPAN_DECIDE) as span:
            plan = plan_request(
                policy, classified.routing(), request.model, request.max_tokens, request.metadata, inputs.health,
                options=request.options, text=request.text, state=self.state, sticky_model=inputs.sticky_model,
                budget_soft=inputs.budget_soft, now_ms=int(time.time() * 1000),
            )
            if span.is_recording():  # the attribute dict alone costs measurable time per request
                self._record_plan(span, policy, plan, classified, decision_id)
        return plan

    async def admit(self, policy: RoutingPolicy, plan: Plan, classified: Classified, request: ChatInput) -> Admitted:
        """Rate-limit slots and a budget reservation; models without headroom leave the (new) plan.

        A request that draws on no limit and no budget passes at once, without a span: one would cost
        more than the stage does, in every such request's trace.
        """
        if not self.spend.applies(policy, plan, request.metadata, request.quota):
            return Admitted(plan, Admission(estimated_tokens=classified.features.input_tokens + plan.max_tokens))
        with stage(semconv.SPAN_ADMIT) as span:
            admitted = await self.spend.admit(policy, plan, classified.features.input_tokens, request.metadata,
                                              request.quota)
            if span.is_recording():
                set_attributes(span, {semconv.ADMISSION_SKIPPED: join(list(admitted.admission.dropped)),
                                      semconv.ADMISSION_UNCHECKED: join(admitted.admission.unchecked),
                                      semconv.ADMISSION_RESERVED: admitted.admission.reservation is not None})
        return admitted

    async def execute(self, policy: RoutingPolicy, request: ChatInput,
                      decision: Decision) -> AsyncIterator[Decision | Delta | Finished]:
        """The executor's answer: `decision` once the call is out, then deltas, then one Finished.

        The decision is yielded after the executor call exists, so the call's request goes out while the
        decision is being written to the caller instead of after it.
        """
        plan = decision.plan
        reliability = policy.routes[plan.settings_route].reliability
        with stage(semconv.SPAN_EXECUTE) as span:
            if span.is_recording():
                span.set_attribute(semconv.DECISION_ID, decision.decision_id)
            # Executor calls (and the ones replacing a failed replica) are children of this stage.
            token = otel_context.attach(trace.set_span_in_context(span)) if span.is_recording() else None
            try:
                stream = self.executor.open(execute_request(request, decision, reliability))
            finally:
                if token is not None:
                    otel_context.detach(token)
            yield decision
            finished: Finished | None = None
            async for event in stream.events():
                if isinstance(event, Finished):
                    finished = event
                yield event
            if span.is_recording() and finished is not None:
                span.set_attribute(semconv.FINISH_STATUS, FinishStatus.label_of(finished.status))
            self._record_finished(decision, finished)

    async def settle(self, admission: Admission, finished: Finished | None) -> None:
        """Charge the actual cost to the budget and correct the rate limits' token estimate (when admission took any)."""
        if not admission.took:
            return
        with stage(semconv.SPAN_SETTLE) as span:
            cost = finished.cost_usd if finished is not None else 0.0
            await self.spend.settle(admission, cost, finished.tokens_used if finished is not None else 0)
            if span.is_recording():
                span.set_attribute(semconv.COST_USD, cost)

    def count_key_usage(self, request: ChatInput, finished: Finished | None) -> None:
        """Add the request to its API key's usage: in memory here, written to Redis in the background."""
        if self.key_usage is None or request.quota is None:
            return
        usage = finished.usage if finished is not None else None
        self.key_usage.add(request.quota.key_id, KeyUsage(
            requests=1, errors=int(finished is None or finished.status in REQUEST_ERROR_STATUSES),
            input_tokens=usage.input_tokens if usage is not None else 0,
            output_tokens=usage.output_tokens if usage is not None else 0,
            cost_usd=finished.cost_usd if finished is not None else 0.0))

    def report(self, policy: RoutingPolicy, request: ChatInput, decision: Decision, finished: Finished | None,
               started: float, first_at: float) -> None:
        """Queue the request's summary for telemetry and its ledger (never waits; no span: it costs less than one).

        The decision's wire form is the one the caller got (made once); the conversation is only hashed.
        """
        if self.reporter is None:
            return
        now = time.monotonic()
        plan = decision.plan
        keys, metadata = policy.request_keys, request.metadata
        self.reporter.report(telemetry_pb2.RequestSummary(
            decision_id=decision.decision_id, route=plan.route, experiment=plan.experiment, variant=plan.variant,
            model=finished.model if finished is not None else "",
            status=finished.status if finished is not None else FinishStatus.UNSPECIFIED,
            ttft_ms=(first_at - started) * 1000 if first_at else 0.0, duration_ms=(now - started) * 1000,
            cost_usd=finished.cost_usd if finished is not None else 0.0,
            tenant=metadata.get(keys.tenant, ""), timestamp_ms=int(time.time() * 1000),
            decision=decision_to_proto(decision),
            final=final_to_proto(finished, decision) if finished is not None else None,
            project=metadata.get(keys.project, ""), user=metadata.get(keys.user, ""),
            api_key_id=request.quota.key_id if request.quota is not None else "",
            prompt_sha256=conversation_sha256(request.messages),
            **stored_text(policy, plan.route, metadata.get(keys.data_class, ""), request.messages),
        ))

    def report_refused(self, policy: RoutingPolicy, request: ChatInput, decision_id: str, error: RoutemeshError,
                       started: float) -> None:
        """Queue the summary of a request refused before its decision: no model, the reason as its error."""
        if self.reporter is None:
            return
        keys, metadata = policy.request_keys, request.metadata
        target = request.model or policy.default_route
        self.reporter.report(telemetry_pb2.RequestSummary(
            decision_id=decision_id, route=target if target in policy.routes else "",
            status=FinishStatus.UNSPECIFIED, duration_ms=(time.monotonic() - started) * 1000,
            tenant=metadata.get(keys.tenant, ""), timestamp_ms=int(time.time() * 1000),
            final=router_pb2.Final(decision_id=decision_id, error=f"{error.reason}: {error.message}"[:500]),
            project=metadata.get(keys.project, ""), user=metadata.get(keys.user, ""),
            api_key_id=request.quota.key_id if request.quota is not None else "",
            prompt_sha256=conversation_sha256(request.messages),
        ))

    # ---- helpers ---------------------------------------------------------------------------------------

    def _policy(self) -> RoutingPolicy:
        policy = self.holder.current
        if policy is None:
            raise NotReady("the router has not received a policy from the control plane yet")
        return policy

    def _input_waits(self, policy: RoutingPolicy, request: ChatInput) -> dict[str, Awaitable[Any]]:
        """Only what needs awaiting (each gathered coroutine costs a task): pushed health is read in-process."""
        waits: dict[str, Awaitable[Any]] = {}
        if self.health.pushed() is None:
            waits["health"] = self.health.snapshot()
        conversation = request.metadata.get(policy.request_keys.conversation, "")
        if conversation:
            waits["sticky"] = self.affinity.get(conversation)
        if budget_scopes(policy, request.metadata, request.quota):
            waits["soft"] = self.spend.soft_limited(policy, request.metadata, request.quota)
        return waits

    def _decision(self, decision_id: str, policy: RoutingPolicy, plan: Plan, classified: Classified,
                  inputs: DecisionInputs, unchecked: tuple[str, ...]) -> Decision:
        degraded = tuple(name for name, down in (("classifier", classified.source == FALLBACK_SOURCE),
                                                 ("telemetry", not inputs.health_fresh)) if down) + unchecked
        return Decision(decision_id=decision_id, plan=plan, provider=policy.models[plan.primary].provider,
                        classified=classified, policy_version=policy.version, policy_digest=policy.digest,
                        trace_id=trace_id_hex(), degraded=degraded)

    async def _keep_conversation(self, policy: RoutingPolicy, request: ChatInput, decision: Decision) -> None:
        conversation = request.metadata.get(policy.request_keys.conversation, "")
        route = decision.plan.route
        if conversation and route and policy.routes[route].sticky:
            await self.affinity.set(conversation, decision.plan.primary)

    def _record_plan(self, span: Span, policy: RoutingPolicy, plan: Plan, classified: Classified,
                     decision_id: str) -> None:
        features, age = classified.features, self.health.age_s()
        set_attributes(span, {
            semconv.DECISION_ID: decision_id, semconv.DECISION_MODEL: plan.primary,
            semconv.DECISION_PROVIDER: policy.models[plan.primary].provider,
            semconv.DECISION_STRATEGY: plan.strategy, semconv.DECISION_ROUTE: plan.route,
            semconv.DECISION_RULE: plan.rule, semconv.DECISION_REASON: plan.reason,
            semconv.DECISION_FALLBACKS: join(plan.fallbacks), semconv.DECISION_POLICY_VERSION: policy.version,
            semconv.EXPERIMENT: plan.experiment, semconv.VARIANT: plan.variant,
            semconv.BUDGET_SOFT_LIMITED: plan.budget_soft_limited or None,
            semconv.ESTIMATED_COST_USD: plan.estimated_cost_usd, semconv.REQUEST_TASK_TYPE: features.task_type,
            semconv.REQUEST_INPUT_TOKENS: features.input_tokens, semconv.REQUEST_LANGUAGE: features.language,
            semconv.REQUEST_COMPLEXITY: features.complexity, semconv.FEATURES_SOURCE: classified.source,
            semconv.QUALITY_PREDICTOR: classified.predictor_sha256 or None,
            semconv.PREDICTED_SUCCESS: classified.predicted_success.get(plan.primary),
            semconv.HEALTH_SOURCE: self.health.mode,
            semconv.HEALTH_AGE_MS: round(age * 1000, 1) if age is not None else None,
        })

    @staticmethod
    def _record_finished(decision: Decision, finished: Finished | None) -> None:
        """The outcome, on the request's own span."""
        span = trace.get_current_span()
        if finished is None or not span.is_recording():
            return
        set_attributes(span, {
            semconv.EXPERIMENT: decision.plan.experiment, semconv.VARIANT: decision.plan.variant,
            semconv.FINISH_STATUS: FinishStatus.label_of(finished.status), semconv.COST_USD: finished.cost_usd,
            semconv.ATTEMPTS: len(finished.attempts), semconv.GEN_AI_RESPONSE_MODEL: finished.model,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: finished.usage.input_tokens if finished.usage else 0,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: finished.usage.output_tokens if finished.usage else 0,
        })
