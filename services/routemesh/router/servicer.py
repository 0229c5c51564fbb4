"""The RouterService servicer: validate, decide (classifier + telemetry concurrently), execute, relay."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_status import _async as rpc_status_async
from opentelemetry.trace import Status, StatusCode

from routemesh.common import semconv
from routemesh.common.channels import aio_channel, deadline_for
from routemesh.common.coalesce import batches
from routemesh.common.errors import InvalidRequest, NotReady, RelayedError, UpstreamUnavailable
from routemesh.common.messages import ROLE_NAMES
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.tracing import set_attributes, start_client_span, join, trace_id_hex, tracer
from routemesh.router.features import FeatureSource
from routemesh.router.planner import ModelHealthView, Plan, plan_request
from routemesh.v1 import (
    common_pb2,
    executor_pb2,
    executor_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)

log = logging.getLogger(__name__)
_MAX_METADATA = 64
_MAX_MODEL_NAME = 256


def validate_chat(messages: Sequence[common_pb2.Message], model: str, max_tokens: int,
                  metadata: dict[str, str], temperature: float | None) -> None:
    """Raise InvalidRequest naming every bad field."""
    problems: list[tuple[str, str]] = []
    if not messages:
        problems.append(("messages", "at least one message is required"))
    for i, message in enumerate(messages):
        if message.role not in ROLE_NAMES:
            problems.append((f"messages[{i}].role", "must be set (SYSTEM, USER, ASSISTANT or TOOL)"))
    if messages and not any(m.content.strip() for m in messages):
        problems.append(("messages", "every message is empty"))
    if max_tokens < 0:
        problems.append(("max_tokens", f"must not be negative (got {max_tokens}); 0 means the policy default"))
    if len(model) > _MAX_MODEL_NAME:
        problems.append(("model", f"longer than {_MAX_MODEL_NAME} characters"))
    if len(metadata) > _MAX_METADATA:
        problems.append(("metadata", f"more than {_MAX_METADATA} entries"))
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        problems.append(("temperature", f"must be between 0 and 2 (got {temperature})"))
    if problems:
        raise InvalidRequest("invalid chat request: " + "; ".join(f"{f}: {d}" for f, d in problems),
                             field_violations=problems)


class HealthSource:
    """Per-request health from telemetry, falling back to the last snapshot when telemetry is down."""

    def __init__(self, address: str):
        self.address = address
        self._stub: telemetry_pb2_grpc.TelemetryServiceStub | None = None
        self.last: dict[str, ModelHealthView] = {}
        self.last_at = 0.0

    async def snapshot(self, context: grpc.aio.ServicerContext) -> dict[str, ModelHealthView]:
        if self._stub is None:
            self._stub = telemetry_pb2_grpc.TelemetryServiceStub(aio_channel(self.address))
        span, metadata = start_client_span("routemesh.v1.TelemetryService/GetSnapshot")
        try:
            response = await self._stub.GetSnapshot(
                telemetry_pb2.GetSnapshotRequest(), metadata=metadata, timeout=deadline_for(context, 0.3))
        except grpc.aio.AioRpcError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            log.debug("telemetry unavailable (%s); using snapshot from %.1fs ago", exc.code().name,
                      time.monotonic() - self.last_at if self.last_at else -1)
            return self.last
        finally:
            span.end()
        self.last = {
            h.model: ModelHealthView(samples=h.samples, error_rate=h.error_rate, ttft_p50_ms=h.ttft_p50_ms,
                                     in_flight=h.in_flight)
            for h in response.models
        }
        self.last_at = time.monotonic()
        return self.last


def decision_to_proto(plan: Plan, decision_id: str, features: common_pb2.Features, policy_version: int,
                      provider: str, trace_id: str) -> router_pb2.Decision:
    return router_pb2.Decision(
        decision_id=decision_id, model=plan.primary, provider=provider, strategy=plan.strategy,
        reason=plan.reason, route=plan.route, fallbacks=plan.fallbacks, features=features,
        policy_version=policy_version, trace_id=trace_id,
    )


def candidates_to_proto(plan: Plan) -> list[router_pb2.Candidate]:
    return [
        router_pb2.Candidate(model=c.model, provider=c.provider, eligible=c.eligible, rank=c.rank,
                             rejection_reason=c.rejection_reason, score=c.score,
                             estimated_cost_usd=c.estimated_cost_usd, factors=c.factors)
        for c in plan.candidates
    ]


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Chat and Explain share `_decide`, so Explain shows exactly what Chat would do."""

    def __init__(self, holder: PolicyHolder, features: FeatureSource, health: HealthSource, executor_address: str):
        self.holder = holder
        self.features = features
        self.health = health
        self.executor_address = executor_address
        self._executor: executor_pb2_grpc.ExecutorServiceStub | None = None

    async def _decide(self, request: router_pb2.ChatRequest | router_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext,
                      temperature: float | None = None) -> tuple[Plan, router_pb2.Decision]:
        metadata = dict(request.metadata)
        validate_chat(request.messages, request.model, request.max_tokens, metadata, temperature)
        current = self.holder.current
        if current is None:
            raise NotReady("the router has not received a policy from the control plane yet")
        features, health = await asyncio.gather(
            self.features.classify(request.messages, context), self.health.snapshot(context))
        with tracer().start_as_current_span(semconv.SPAN_DECIDE) as span:
            plan = plan_request(current.policy, FeatureSource.routing_features(features), request.model,
                                request.max_tokens, metadata, health)
            decision_id = uuid.uuid4().hex
            provider = current.policy.models[plan.primary].provider
            set_attributes(span, {
                semconv.DECISION_ID: decision_id, semconv.DECISION_MODEL: plan.primary,
                semconv.DECISION_PROVIDER: provider, semconv.DECISION_STRATEGY: plan.strategy,
                semconv.DECISION_ROUTE: plan.route, semconv.DECISION_RULE: plan.rule,
                semconv.DECISION_REASON: plan.reason, semconv.DECISION_FALLBACKS: join(plan.fallbacks),
                semconv.DECISION_POLICY_VERSION: current.version,
                semconv.REQUEST_TASK_TYPE: common_pb2.TaskType.Name(features.task_type).removeprefix("TASK_TYPE_").lower(),
                semconv.REQUEST_INPUT_TOKENS: features.input_tokens, semconv.REQUEST_LANGUAGE: features.language,
                semconv.REQUEST_COMPLEXITY: features.complexity, semconv.FEATURES_SOURCE: features.source,
            })
        decision = decision_to_proto(plan, decision_id, features, current.version, provider, trace_id_hex())
        return plan, decision

    async def Explain(self, request: router_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> router_pb2.ExplainResponse:
        plan, decision = await self._decide(request, context)
        return router_pb2.ExplainResponse(decision=decision, candidates=candidates_to_proto(plan))

    async def Chat(self, request: router_pb2.ChatRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.ChatResponse]:
        temperature = request.temperature if request.HasField("temperature") else None
        plan, decision = await self._decide(request, context, temperature)
        yield router_pb2.ChatResponse(decision=decision)
        if self._executor is None:
            self._executor = executor_pb2_grpc.ExecutorServiceStub(aio_channel(self.executor_address))
        execute = executor_pb2.ExecuteRequest(
            messages=request.messages, plan=plan.models, max_tokens=plan.max_tokens,
            decision_id=decision.decision_id, estimated_input_tokens=decision.features.input_tokens,
        )
        if temperature is not None:
            execute.temperature = temperature
        span, metadata = start_client_span("routemesh.v1.ExecutorService/Execute",
                                           **{semconv.DECISION_ID: decision.decision_id})
        remaining = context.time_remaining()
        call = self._executor.Execute(execute, metadata=metadata,
                                      timeout=None if remaining is None else max(0.001, remaining - 0.02))
        final: router_pb2.Final | None = None
        relayed = 0
        try:
            async for batch in batches(call.__aiter__()):
                text = "".join(r.delta.text for r in batch if r.HasField("delta"))
                if text:
                    relayed += len(text)
                    yield router_pb2.ChatResponse(delta=common_pb2.Delta(text=text))
                for response in batch:
                    if response.HasField("result"):
                        final = self._final(response.result, decision)
        except grpc.aio.AioRpcError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            if not relayed:
                status = await rpc_status_async.from_call(call)
                if status is not None:
                    raise RelayedError(status) from None
                raise UpstreamUnavailable(f"executor unavailable: {exc.code().name}: {exc.details()}",
                                          reason="EXECUTOR_UNAVAILABLE") from None
            final = router_pb2.Final(
                status=common_pb2.FINISH_STATUS_FAILED, decision_id=decision.decision_id,
                trace_id=decision.trace_id, error=f"executor stream failed after the first token: {exc.code().name}",
            )
        finally:
            if not call.done():
                call.cancel()
            span.end()
        if final is None:
            final = router_pb2.Final(status=common_pb2.FINISH_STATUS_FAILED, decision_id=decision.decision_id,
                                     trace_id=decision.trace_id, error="executor stream ended without a result")
        self._record_final(final)
        yield router_pb2.ChatResponse(final=final)

    @staticmethod
    def _final(result: executor_pb2.ExecutionResult, decision: router_pb2.Decision) -> router_pb2.Final:
        return router_pb2.Final(
            status=result.status, usage=result.usage, cost_usd=result.cost_usd, model=result.model,
            provider=result.provider, attempts=result.attempts, decision_id=decision.decision_id,
            trace_id=decision.trace_id, error=result.error,
        )

    @staticmethod
    def _record_final(final: router_pb2.Final) -> None:
        from opentelemetry import trace

        span = trace.get_current_span()
        set_attributes(span, {
            semconv.FINISH_STATUS: common_pb2.FinishStatus.Name(final.status).removeprefix("FINISH_STATUS_").lower(),
            semconv.COST_USD: final.cost_usd, semconv.ATTEMPTS: len(final.attempts),
            semconv.GEN_AI_RESPONSE_MODEL: final.model,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: final.usage.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: final.usage.output_tokens,
        })
