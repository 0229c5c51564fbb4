"""One decision: validate, gather features, health, affinity and budget state concurrently, then plan."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.trace import Status, StatusCode

from routemesh.common import semconv
from routemesh.common.errors import InvalidRequest, NotReady
from routemesh.common.messages import ROLE_NAMES
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.tracing import join, set_attributes, trace_id_hex, tracer
from routemesh.router.features import FALLBACK_SOURCE, FeatureSource
from routemesh.router.health import HealthSource, HealthWatch
from routemesh.router.planner import DecisionState, Plan, RoutingOptionsView, plan_request
from routemesh.router.spend import SpendGuard, budget_scopes
from routemesh.router.sticky import ConversationAffinity
from routemesh.v1 import common_pb2, router_pb2

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


RESPONSE_FORMATS = ("", "text", "json_object")


def options_view(request: router_pb2.ChatRequest | router_pb2.ExplainRequest) -> RoutingOptionsView:
    """The request's routing options; tools and JSON output add the capabilities they need."""
    options = request.routing
    needed = list(options.required_capabilities)
    if request.tools and "tools" not in needed:
        needed.append("tools")
    if request.response_format == "json_object" and "json" not in needed:
        needed.append("json")
    return RoutingOptionsView(
        strategy=options.strategy,
        max_cost_usd=options.max_cost_usd if options.HasField("max_cost_usd") else None,
        latency_target_ms=options.latency_target_ms if options.HasField("latency_target_ms") else None,
        allow_fallback=options.allow_fallback, provider=options.provider,
        required_capabilities=tuple(needed),
    )


def validate_tools(request: router_pb2.ChatRequest | router_pb2.ExplainRequest) -> None:
    problems = []
    if request.response_format not in RESPONSE_FORMATS:
        problems.append(("response_format", f"must be one of {list(RESPONSE_FORMATS[1:])}"))
    names = [t.name for t in request.tools]
    for i, tool in enumerate(request.tools):
        if not tool.name:
            problems.append((f"tools[{i}].name", "must not be empty"))
        if tool.parameters_json:
            try:
                json.loads(tool.parameters_json)
            except ValueError:
                problems.append((f"tools[{i}].parameters_json", "must be a JSON Schema as JSON text"))
    choice = getattr(request, "tool_choice", "")
    if choice and choice not in ("auto", "none", "required") and choice not in names:
        problems.append(("tool_choice", f"must be auto, none, required or one of the tools {names}"))
    if problems:
        raise InvalidRequest("invalid tools or response format", field_violations=problems)


def last_user_text(messages: Sequence[common_pb2.Message]) -> str:
    for message in reversed(messages):
        if message.role == common_pb2.ROLE_USER:
            return message.content
    return ""


def candidates_to_proto(plan: Plan) -> list[router_pb2.Candidate]:
    return [
        router_pb2.Candidate(model=c.model, provider=c.provider, eligible=c.eligible, rank=c.rank,
                             rejection_reason=c.rejection_reason, score=c.score,
                             estimated_cost_usd=c.estimated_cost_usd, factors=c.factors)
        for c in plan.candidates
    ]


@dataclass
class Decided:
    """A decision with what Chat needs afterwards."""

    plan: Plan
    decision: router_pb2.Decision
    policy: PolicyVersion
    metadata: dict[str, str]
    conversation: str


class Decider:
    """Chat and Explain share this, so Explain shows exactly what Chat would do."""

    def __init__(self, holder: PolicyHolder, features: FeatureSource, health: HealthSource | HealthWatch,
                 affinity: ConversationAffinity, spend: SpendGuard, state: DecisionState | None = None):
        self.holder = holder
        self.features = features
        self.health = health
        self.affinity = affinity
        self.spend = spend
        self.state = state or DecisionState()

    async def decide(self, request: router_pb2.ChatRequest | router_pb2.ExplainRequest,
                     context: grpc.aio.ServicerContext, temperature: float | None = None) -> Decided:
        metadata = dict(request.metadata)
        validate_chat(request.messages, request.model, request.max_tokens, metadata, temperature)
        validate_tools(request)
        current = self.holder.current
        if current is None:
            raise NotReady("the router has not received a policy from the control plane yet")
        policy = current.policy
        conversation = metadata.get(policy.request_keys.conversation, "")
        # Only what needs awaiting is awaited, concurrently; a plain request awaits the classifier alone
        # (pushed health is read in-process, and each gathered coroutine would cost a task).
        waits: dict[str, Awaitable[Any]] = {"features": self.features.classify(request.messages, context)}
        pushed = self.health.pushed()
        if pushed is not None:
            health, health_fresh = pushed
        else:
            waits["health"] = self.health.snapshot(context)
        if conversation:
            waits["sticky"] = self.affinity.get(conversation)
        if budget_scopes(policy, metadata):
            waits["soft"] = self.spend.soft_limited(policy, metadata)
        got = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True)) if len(waits) > 1 \
            else {"features": await waits["features"]}
        features: common_pb2.Features = got["features"]
        if "health" in got:
            health, health_fresh = got["health"]
        sticky, soft = got.get("sticky", ""), got.get("soft", False)
        health_age = self.health.age_s()
        # Not made current: nothing under it starts spans, and attaching a context costs ~3 µs.
        span = tracer().start_span(semconv.SPAN_DECIDE)
        try:
            plan = plan_request(
                policy, FeatureSource.routing_features(features), request.model, request.max_tokens, metadata,
                health, options=options_view(request), text=last_user_text(request.messages),
                state=self.state, sticky_model=sticky, budget_soft=soft, now_ms=int(time.time() * 1000),
            )
            decision_id = uuid.uuid4().hex
            provider = policy.models[plan.primary].provider
            if span.is_recording():  # the attribute dict alone costs ~10 µs per request
                set_attributes(span, {
                    semconv.DECISION_ID: decision_id, semconv.DECISION_MODEL: plan.primary,
                    semconv.DECISION_PROVIDER: provider, semconv.DECISION_STRATEGY: plan.strategy,
                    semconv.DECISION_ROUTE: plan.route, semconv.DECISION_RULE: plan.rule,
                    semconv.DECISION_REASON: plan.reason, semconv.DECISION_FALLBACKS: join(plan.fallbacks),
                    semconv.DECISION_POLICY_VERSION: current.version,
                    semconv.EXPERIMENT: plan.experiment, semconv.VARIANT: plan.variant,
                    semconv.BUDGET_SOFT_LIMITED: plan.budget_soft_limited or None,
                    semconv.ESTIMATED_COST_USD: plan.estimated_cost_usd,
                    semconv.REQUEST_TASK_TYPE: common_pb2.TaskType.Name(features.task_type)
                    .removeprefix("TASK_TYPE_").lower(),
                    semconv.REQUEST_INPUT_TOKENS: features.input_tokens, semconv.REQUEST_LANGUAGE: features.language,
                    semconv.REQUEST_COMPLEXITY: features.complexity, semconv.FEATURES_SOURCE: features.source,
                    semconv.HEALTH_SOURCE: self.health.mode,
                    semconv.HEALTH_AGE_MS: round(health_age * 1000, 1) if health_age is not None else None,
                })
        except Exception as exc:  # what start_as_current_span would record: no model fits, bad options
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()
        degraded = [name for name, down in (("classifier", features.source == FALLBACK_SOURCE),
                                            ("telemetry", not health_fresh)) if down]
        decision = router_pb2.Decision(
            decision_id=decision_id, model=plan.primary, provider=provider, strategy=plan.strategy,
            reason=plan.reason, route=plan.route, fallbacks=plan.fallbacks, features=features,
            policy_version=current.version, trace_id=trace_id_hex(), rule=plan.rule, experiment=plan.experiment,
            variant=plan.variant, estimated_cost_usd=plan.estimated_cost_usd,
            budget_soft_limited=plan.budget_soft_limited, candidates=candidates_to_proto(plan), degraded=degraded,
        )
        return Decided(plan=plan, decision=decision, policy=current, metadata=metadata, conversation=conversation)

