"""The router's edge: RouterService protos to the pipeline's ChatInput, and its events back to protos."""

from __future__ import annotations


from routemesh.classifier.wire import features_to_proto
from routemesh.router.decision.filters import RoutingOptionsView
from routemesh.router.decision.planner import Plan
from routemesh.router.request import ChatInput, Decision, Finished
from routemesh.v1 import router_pb2


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


def chat_input(request: router_pb2.ChatRequest | router_pb2.ExplainRequest, api_key: str = "") -> ChatInput:
    """A ChatRequest or ExplainRequest as the pipeline takes it."""
    temperature = request.temperature if isinstance(request, router_pb2.ChatRequest) \
        and request.HasField("temperature") else None
    return ChatInput(
        messages=request.messages, model=request.model, max_tokens=request.max_tokens,
        metadata=dict(request.metadata), options=options_view(request), temperature=temperature,
        tools=request.tools, tool_choice=getattr(request, "tool_choice", ""),
        response_format=request.response_format, api_key=api_key,
    )


def candidates_to_proto(plan: Plan) -> list[router_pb2.Candidate]:
    return [
        router_pb2.Candidate(model=c.model, provider=c.provider, eligible=c.eligible, rank=c.rank,
                             rejection_reason=c.rejection_reason, score=c.score,
                             estimated_cost_usd=c.estimated_cost_usd, factors=c.factors)
        for c in plan.candidates
    ]


def decision_to_proto(decision: Decision) -> router_pb2.Decision:
    """The decision's wire form, made once per decision (the caller's event and the ledger's summary share it)."""
    if decision.wire:
        return decision.wire[0]
    message = _decision_message(decision)
    decision.wire.append(message)
    return message


def _decision_message(decision: Decision) -> router_pb2.Decision:
    plan = decision.plan
    return router_pb2.Decision(
        decision_id=decision.decision_id, model=plan.primary, provider=decision.provider, strategy=plan.strategy,
        reason=plan.reason, route=plan.route, fallbacks=plan.fallbacks,
        features=features_to_proto(decision.classified.features, decision.classified.source,
                                   decision.classified.predicted_success, decision.classified.predictor_sha256),
        policy_version=decision.policy_version, trace_id=decision.trace_id, rule=plan.rule,
        experiment=plan.experiment, variant=plan.variant, estimated_cost_usd=plan.estimated_cost_usd,
        budget_soft_limited=plan.budget_soft_limited, candidates=candidates_to_proto(plan),
        degraded=decision.degraded,
    )


def final_to_proto(finished: Finished, decision: Decision) -> router_pb2.Final:
    plan = decision.plan
    return router_pb2.Final(
        status=finished.status, usage=finished.usage, cost_usd=finished.cost_usd, model=finished.model,
        provider=finished.provider, attempts=finished.attempts, decision_id=decision.decision_id,
        trace_id=decision.trace_id, error=finished.error, experiment=plan.experiment, variant=plan.variant,
    )
