"""The routing decision: request features + policy + health in, an ordered plan with reasons out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from routemesh.common.errors import InvalidRequest, NoEligibleModel, NotFound
from routemesh.common.policy import AUTO, Model, Policy, Route, RuleCondition


@dataclass(frozen=True)
class RoutingFeatures:
    """What the planner reads of a request (from the classifier, or the router's local fallback)."""

    input_tokens: int
    task_type: str = "chat"
    language: str = "und"
    complexity: float = 0.0
    has_code: bool = False


@dataclass(frozen=True)
class ModelHealthView:
    """What the planner reads of a model's live health (from telemetry)."""

    samples: int = 0
    error_rate: float = 0.0
    ttft_p50_ms: float = 0.0
    in_flight: int = 0


@dataclass
class CandidateEvaluation:
    """One model as the planner saw it: eligible with a rank and score, or rejected with a reason."""

    model: str
    provider: str
    eligible: bool
    estimated_cost_usd: float
    rank: int = 0
    score: float = 0.0
    rejection_reason: str = ""
    factors: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    """The decision: models to try in order, and why."""

    models: list[str]
    strategy: str
    reason: str
    route: str = ""
    rule: str = ""
    max_tokens: int = 0
    candidates: list[CandidateEvaluation] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.models[0]

    @property
    def fallbacks(self) -> list[str]:
        return self.models[1:]


def condition_matches(cond: RuleCondition, features: RoutingFeatures, metadata: Mapping[str, str]) -> bool:
    """All stated fields of the condition hold for the request."""
    if cond.task_types and features.task_type not in cond.task_types:
        return False
    if cond.min_input_tokens is not None and features.input_tokens < cond.min_input_tokens:
        return False
    if cond.max_input_tokens is not None and features.input_tokens > cond.max_input_tokens:
        return False
    if cond.min_complexity is not None and features.complexity < cond.min_complexity:
        return False
    if cond.has_code is not None and features.has_code != cond.has_code:
        return False
    if cond.languages and features.language not in cond.languages:
        return False
    return all(metadata.get(k) == v for k, v in cond.metadata.items())


def _fit_problem(model: Model, features: RoutingFeatures, max_tokens: int) -> str:
    """Why the request cannot fit the model, or ""."""
    if not model.enabled:
        return "disabled in the policy"
    needed = features.input_tokens + max_tokens
    if needed > model.context_window:
        return (
            f"context window {model.context_window} < {features.input_tokens} input + {max_tokens} output tokens"
        )
    if max_tokens > model.max_output_tokens:
        return f"max_tokens {max_tokens} > the model's max output {model.max_output_tokens}"
    return ""


def _health_problem(policy: Policy, health: ModelHealthView | None) -> str:
    gate = policy.health
    if health and health.samples >= gate.min_samples and health.error_rate > gate.max_error_rate:
        return (
            f"unhealthy: error rate {health.error_rate:.0%} over {health.samples} recent attempts "
            f"> {gate.max_error_rate:.0%}"
        )
    return ""


def _evaluate(
    name: str, model: Model, features: RoutingFeatures, max_tokens: int, health: ModelHealthView | None,
    policy: Policy, *, apply_health: bool,
) -> CandidateEvaluation:
    cost = model.estimated_cost(features.input_tokens, max_tokens)
    problem = _fit_problem(model, features, max_tokens) or (
        _health_problem(policy, health) if apply_health else ""
    )
    factors = {"estimated_cost_usd": cost, "quality": model.quality}
    if health:
        factors.update(error_rate=health.error_rate, ttft_p50_ms=health.ttft_p50_ms, samples=float(health.samples))
    return CandidateEvaluation(
        model=name, provider=model.provider, eligible=not problem, estimated_cost_usd=cost,
        rejection_reason=problem, factors=factors,
    )


def resolve_max_tokens(policy: Policy, requested: int) -> int:
    """The request's max_tokens, or the policy default for 0."""
    if requested < 0:
        raise InvalidRequest(
            "max_tokens must not be negative", field_violations=[("max_tokens", f"got {requested}; use 0 for the default")]
        )
    return requested or policy.defaults.max_tokens


def plan_request(
    policy: Policy,
    features: RoutingFeatures,
    requested_model: str,
    max_tokens: int,
    metadata: Mapping[str, str],
    health: Mapping[str, ModelHealthView],
) -> Plan:
    """Choose the ordered plan for one request; raise NotFound or NoEligibleModel with reasons."""
    max_tokens = resolve_max_tokens(policy, max_tokens)
    name = requested_model.strip() or AUTO
    if name == AUTO:
        name = policy.defaults.route
    if name in policy.routes:
        return _plan_route(policy, name, policy.routes[name], features, max_tokens, metadata, health)
    if name in policy.models:
        return _plan_pinned(policy, name, features, max_tokens, health)
    raise NotFound(
        f"unknown model or route {requested_model!r}",
        reason="UNKNOWN_MODEL",
        metadata={"routes": ",".join(sorted(policy.routes)), "models": ",".join(sorted(policy.models))},
        field_violations=[("model", f"not a route ({', '.join(sorted(policy.routes))}), a model, or 'auto'")],
    )


def _plan_pinned(
    policy: Policy, name: str, features: RoutingFeatures, max_tokens: int, health: Mapping[str, ModelHealthView]
) -> Plan:
    # A pinned model is honoured even when telemetry calls it unhealthy: the caller asked for it.
    evaluation = _evaluate(name, policy.models[name], features, max_tokens, health.get(name), policy,
                           apply_health=False)
    if not evaluation.eligible:
        raise NoEligibleModel(
            f"pinned model {name!r} cannot serve this request: {evaluation.rejection_reason}",
            metadata={name: evaluation.rejection_reason},
        )
    evaluation.rank, evaluation.score = 1, 1.0
    return Plan(models=[name], strategy="pinned", reason=f"model {name!r} pinned by the request",
                max_tokens=max_tokens, candidates=[evaluation])


def _plan_route(
    policy: Policy, route_name: str, route: Route, features: RoutingFeatures, max_tokens: int,
    metadata: Mapping[str, str], health: Mapping[str, ModelHealthView],
) -> Plan:
    rule = next((r for r in route.rules if condition_matches(r.when, features, metadata)), None)
    pool = list(rule.models if rule else route.models)
    strategy = (rule.strategy if rule else None) or route.strategy
    considered = list(dict.fromkeys([*pool, *route.fallbacks, *route.models]))
    evaluations = {
        m: _evaluate(m, policy.models[m], features, max_tokens, health.get(m), policy, apply_health=True)
        for m in considered
    }
    eligible_pool = [m for m in pool if evaluations[m].eligible]
    if strategy == "cheapest":
        eligible_pool.sort(key=lambda m: (evaluations[m].estimated_cost_usd, -policy.models[m].quality))
    fallbacks = [m for m in route.fallbacks if evaluations[m].eligible and m not in eligible_pool]
    models = eligible_pool + fallbacks
    for m in considered:
        ev = evaluations[m]
        if ev.eligible and m not in models:
            ev.eligible = False
            ev.rejection_reason = f"not in the pool of rule {rule.name!r}" if rule else "not in the route's pool"
    if not models:
        raise NoEligibleModel(
            f"no model of route {route_name!r} can serve this request: "
            + "; ".join(f"{m}: {evaluations[m].rejection_reason}" for m in considered),
            metadata={m: evaluations[m].rejection_reason for m in considered},
        )
    cheapest = min(evaluations[m].estimated_cost_usd for m in models)
    for rank, m in enumerate(models, start=1):
        ev = evaluations[m]
        ev.rank = rank
        if strategy == "cheapest":
            ev.score = round(cheapest / ev.estimated_cost_usd, 6) if ev.estimated_cost_usd > 0 else 1.0
        else:
            ev.score = round(1.0 - (rank - 1) / len(models), 6)
    why_pool = (
        f"rule {rule.name!r} matched ({_describe(rule.when, features, metadata)})" if rule else "no rule matched"
    )
    how = "cheapest eligible" if strategy == "cheapest" else "first eligible in order"
    ordered = sorted(evaluations.values(), key=lambda e: (not e.eligible, e.rank or 1_000, e.model))
    return Plan(
        models=models,
        strategy=f"rules+{strategy}",
        reason=f"route {route_name!r}: {why_pool}; {how} of {pool}",
        route=route_name,
        rule=rule.name if rule else "",
        max_tokens=max_tokens,
        candidates=ordered,
    )


def _describe(cond: RuleCondition, features: RoutingFeatures, metadata: Mapping[str, str]) -> str:
    parts = []
    if cond.task_types:
        parts.append(f"task_type={features.task_type}")
    if cond.min_input_tokens is not None or cond.max_input_tokens is not None:
        parts.append(f"input_tokens={features.input_tokens}")
    if cond.min_complexity is not None:
        parts.append(f"complexity={features.complexity:.2f}")
    if cond.has_code is not None:
        parts.append(f"has_code={features.has_code}")
    if cond.languages:
        parts.append(f"language={features.language}")
    parts.extend(f"metadata.{k}={metadata.get(k)}" for k in cond.metadata)
    return ", ".join(parts) or "always"
