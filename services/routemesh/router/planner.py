"""The routing decision: target → experiment → rules → filters → strategy → stickiness → fallbacks."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from routemesh.common.errors import InvalidRequest, NoEligibleModel, NotFound
from routemesh.common.policy_schema import AUTO, CAPABILITIES, STRATEGIES, Experiment, Policy, Route, Variant
from routemesh.router.compiled import compiled
from routemesh.router.filters import (
    RequestView,
    RoutingFeatures,
    RoutingOptionsView,
    condition_matches,
    problem_of,
)
from routemesh.router.strategies import (
    LatencyParams,
    ModelHealthView,
    Scored,
    StrategyContext,
    expected_latency,
    explore,
    rank,
)

__all__ = ["CandidateEvaluation", "DecisionState", "ModelHealthView", "Plan", "RoutingFeatures",
           "RoutingOptionsView", "assign_variant", "plan_request", "resolve_max_tokens"]


NO_OPTIONS = RoutingOptionsView()


@dataclass(slots=True)
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
    experiment: str = ""
    variant: str = ""
    estimated_cost_usd: float = 0.0
    budget_soft_limited: bool = False
    candidates: list[CandidateEvaluation] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.models[0]

    @property
    def fallbacks(self) -> list[str]:
        return self.models[1:]


class DecisionState:
    """Process-wide state strategies share: a random source and round-robin counters."""

    def __init__(self, seed: int | None = None):
        self.rng = random.Random(seed)
        self._counters: dict[str, int] = {}

    def round_robin(self, key: str, size: int) -> int:
        value = self._counters.get(key, 0)
        self._counters[key] = value + 1
        return value % size


def resolve_max_tokens(policy: Policy, requested: int) -> int:
    """The request's max_tokens, or the policy default for 0."""
    if requested < 0:
        raise InvalidRequest("max_tokens must not be negative",
                             field_violations=[("max_tokens", f"got {requested}; use 0 for the default")])
    return requested or policy.defaults.max_tokens


def assign_variant(experiment: Experiment, metadata: Mapping[str, str], rng: random.Random) -> Variant:
    """Weighted choice, sticky: the same sticky-key value always gets the same variant."""
    total = sum(v.weight for v in experiment.variants)
    key = metadata.get(experiment.sticky_key)
    if key:
        digest = hashlib.sha256(f"{experiment.name}\x00{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
    else:
        point = rng.random() * total
    for variant in experiment.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return experiment.variants[-1]


def _validate_options(policy: Policy, options: RoutingOptionsView) -> None:
    problems = []
    if options.strategy and options.strategy not in STRATEGIES:
        problems.append(("routing.strategy", f"unknown strategy {options.strategy!r}; known: {list(STRATEGIES)}"))
    bad_caps = [c for c in options.required_capabilities if c not in CAPABILITIES]
    if bad_caps:
        problems.append(("routing.required_capabilities", f"unknown {bad_caps}; known: {list(CAPABILITIES)}"))
    if options.max_cost_usd is not None and options.max_cost_usd < 0:
        problems.append(("routing.max_cost_usd", "must not be negative"))
    if options.latency_target_ms is not None and options.latency_target_ms <= 0:
        problems.append(("routing.latency_target_ms", "must be positive"))
    if problems:
        raise InvalidRequest("invalid routing options", field_violations=problems)
    if options.provider and options.provider not in policy.providers:
        raise NotFound(f"unknown provider {options.provider!r}", reason="UNKNOWN_PROVIDER",
                       field_violations=[("routing.provider", f"defined: {sorted(policy.providers)}")])


@dataclass
class _Selection:
    """Where the pool and strategy came from."""

    route_name: str
    route: Route
    pool: list[str]
    strategy: str
    rule: str = ""
    why: str = ""
    experiment: str = ""
    variant: str = ""
    weights: object = None
    pinned: str = ""


def _select(policy: Policy, name: str, request: RequestView, rng: random.Random,
            budget_soft: bool) -> _Selection:
    options = request.options
    if name in policy.models:
        default = policy.defaults.route
        sel = _Selection(default, policy.routes[default], [name], "ordered", pinned=name,
                         why=f"model {name!r} pinned by the request")
        return sel
    route = policy.routes[name]
    sel = _Selection(name, route, list(route.models), route.strategy, weights=route.weights)
    if route.experiment:
        variant = assign_variant(route.experiment, request.metadata, rng)
        sel.experiment, sel.variant = route.experiment.name, variant.name
        sel.pool = list(variant.models or sel.pool)
        sel.strategy = variant.strategy or sel.strategy
        sel.weights = variant.weights or sel.weights
    rule = next((r for r in route.rules if condition_matches(r.when, request)), None)
    if rule:
        sel.rule = rule.name
        if rule.model:
            sel.pool = [rule.model]
        elif rule.models:
            sel.pool = list(rule.models)
        sel.strategy = rule.strategy or sel.strategy
        sel.why = f"rule {rule.name!r} matched ({_describe(rule.when, request)})"
    else:
        sel.why = "no rule matched"
    if options.strategy:
        sel.strategy, sel.why = options.strategy, sel.why + f"; strategy {options.strategy} requested"
    if budget_soft:
        sel.strategy, sel.why = "cost", sel.why + "; budget past its soft limit: cheapest first"
    return sel


def plan_request(
    policy: Policy,
    features: RoutingFeatures,
    requested_model: str,
    max_tokens: int,
    metadata: Mapping[str, str],
    health: Mapping[str, ModelHealthView],
    *,
    options: RoutingOptionsView = NO_OPTIONS,
    text: str = "",
    state: DecisionState | None = None,
    sticky_model: str = "",
    budget_soft: bool = False,
    now_ms: int | None = None,
) -> Plan:
    """Choose the ordered plan for one request; raise NotFound, InvalidRequest or NoEligibleModel with reasons."""
    max_tokens = resolve_max_tokens(policy, max_tokens)
    _validate_options(policy, options)
    state = state or DecisionState()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    name = requested_model.strip() or AUTO
    if name == AUTO:
        name = policy.defaults.route
    if name not in policy.routes and name not in policy.models:
        raise NotFound(
            f"unknown model or route {requested_model!r}", reason="UNKNOWN_MODEL",
            metadata={"routes": ",".join(sorted(policy.routes)), "models": ",".join(sorted(policy.models))},
            field_violations=[("model", f"not a route ({', '.join(sorted(policy.routes))}), a model, or 'auto'")],
        )
    keys = policy.request_keys
    request = RequestView(features=features, max_tokens=max_tokens, metadata=metadata, options=options,
                          tenant=metadata.get(keys.tenant, ""), data_class=metadata.get(keys.data_class, ""),
                          text=text)
    sel = _select(policy, name, request, state.rng, budget_soft)
    route = sel.route
    pin_strict = (sel.pinned or options.provider) and not options.allow_fallback
    fallbacks = [] if pin_strict else list(route.fallbacks)
    considered = list(dict.fromkeys([*sel.pool, *fallbacks] if sel.pinned else [*sel.pool, *fallbacks, *route.models]))
    output_tokens = route.expected_output(features.task_type, max_tokens)
    evaluations: dict[str, CandidateEvaluation] = {}
    scored: dict[str, Scored] = {}
    fast = compiled(policy)
    models_by_name, task, input_tokens = fast.models, features.task_type, features.input_tokens
    latency = LatencyParams.of(route.latency)
    pool_set = set(sel.pool)
    for m in considered:
        model = models_by_name[m]
        h = health.get(m)
        cost = input_tokens * model.in_price + output_tokens * model.out_price
        ttft, total, known = expected_latency(model, h, latency, output_tokens, now_ms)
        # A pinned model is honoured even when live state disfavours it.
        problem = problem_of(fast, model, h, request, cost, ttft, check_live=m != sel.pinned,
                             pinned_provider_applies=bool(pin_strict) or m in pool_set)
        quality = model.quality_for(task)
        factors = {"estimated_cost_usd": cost, "expected_ttft_ms": ttft, "expected_total_ms": total,
                   "quality_score": quality}
        if h:
            factors["error_rate"], factors["samples"], factors["in_flight"] = h.error_rate, h.samples, h.in_flight
        evaluations[m] = CandidateEvaluation(m, model.provider, not problem, cost, 0, 0.0, problem, factors)
        if not problem:
            scored[m] = Scored(m, model, cost, ttft, total, quality, h.in_flight if h else 0,
                               h.requests_per_minute if h else 0, known, factors)
    ctx = StrategyContext(weights=sel.weights or route.weights, latency=route.latency, quality=route.quality,
                          rng=state.rng, round_robin=state.round_robin, counter_key=f"{sel.route_name}/{sel.rule}")
    ranked = rank(sel.strategy, [scored[m] for m in sel.pool if m in scored], ctx)
    notes = []
    if sel.strategy in ("latency", "hybrid"):
        ranked, note = explore(ranked, ctx)
        notes.append(note)
    pool_order = [c.name for c in ranked]
    # Half-open and recovering models get only their admitted share of first places: traffic ramps back.
    held_back = [m for m in pool_order[:-1] if (h := health.get(m)) is not None and h.admit_fraction < 1.0
                 and state.rng.random() >= h.admit_fraction]
    if held_back:
        pool_order = [m for m in pool_order if m not in held_back] + held_back
        notes.append("recovering (admission ramp): " + ", ".join(held_back) + " moved last")
    if sticky_model and sticky_model in pool_order and route.sticky:
        pool_order.remove(sticky_model)
        pool_order.insert(0, sticky_model)
        notes.append(f"sticky to {sticky_model} for this conversation")
    models = pool_order + [m for m in fallbacks if m in scored and m not in pool_order]
    for m in considered:
        ev = evaluations[m]
        if ev.eligible and m not in models:
            ev.eligible = False
            ev.rejection_reason = f"not in the pool of rule {sel.rule!r}" if sel.rule else "not in the selected pool"
    if not models:
        what = f"pinned model {sel.pinned!r}" if sel.pinned else f"route {sel.route_name!r}"
        raise NoEligibleModel(
            f"no model can serve this request ({what}): "
            + "; ".join(f"{m}: {evaluations[m].rejection_reason}" for m in considered),
            metadata={m: evaluations[m].rejection_reason for m in considered},
        )
    for position, m in enumerate(models, start=1):
        ev = evaluations[m]
        ev.rank = position
        if m in scored:
            ev.score = scored[m].score
    strategy = "pinned" if sel.pinned else sel.strategy
    how = {"pinned": "", "ordered": "first eligible in order"}.get(strategy, f"{strategy} ranking")
    reason = sel.why if sel.pinned else f"route {sel.route_name!r}: {sel.why}; {how} of {sel.pool}"
    if sel.experiment:
        reason += f"; experiment {sel.experiment!r} variant {sel.variant!r}"
    reason += "".join(f"; {n}" for n in notes if n)
    return Plan(
        models=models, strategy=strategy, reason=reason, route="" if sel.pinned else sel.route_name, rule=sel.rule,
        max_tokens=max_tokens, experiment=sel.experiment, variant=sel.variant,
        estimated_cost_usd=evaluations[models[0]].estimated_cost_usd, budget_soft_limited=budget_soft,
        candidates=sorted(evaluations.values(), key=lambda e: (not e.eligible, e.rank or 1_000, e.model)),
    )


def _describe(cond, request: RequestView) -> str:
    f = request.features
    parts = []
    if cond.task_types:
        parts.append(f"task_type={f.task_type}")
    if cond.min_input_tokens is not None or cond.max_input_tokens is not None:
        parts.append(f"input_tokens={f.input_tokens}")
    if cond.min_complexity is not None:
        parts.append(f"complexity={f.complexity:.2f}")
    if cond.has_code is not None:
        parts.append(f"has_code={f.has_code}")
    if cond.languages:
        parts.append(f"language={f.language}")
    if cond.keywords or cond.regex:
        parts.append("text matched")
    parts.extend(f"metadata.{k}={request.metadata.get(k)}" for k in cond.metadata)
    return ", ".join(parts) or "always"
