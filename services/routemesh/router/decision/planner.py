"""The routing plan: target → selection → candidate evaluation → ranking → ordering, each stage a value."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from routemesh.common.errors import NoEligibleModel
from routemesh.common.policy_schema import Learning
from routemesh.quality.serving import PolicyQuality
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.filters import RequestView, RoutingFeatures, RoutingOptionsView, problem_of
from routemesh.router.decision.selection import (
    Selection,
    assign_variant,
    key_allows,
    resolve_max_tokens,
    resolve_target,
    select,
    validate_options,
)
from routemesh.router.decision.strategies import (
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


@dataclass(frozen=True)
class Plan:
    """The decision: models to try in order, and why. Later stages return a new Plan, never change this one."""

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
    # The route whose reliability settings apply (the default route for a pinned model).
    settings_route: str = ""

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


@dataclass(slots=True)
class _Evaluated:
    """Every considered model's evaluation, and the eligible ones scored for ranking."""

    considered: list[str]
    fallbacks: list[str]
    evaluations: dict[str, CandidateEvaluation]
    scored: dict[str, Scored]


def learned_quality(prior: float, signals: tuple[float, int] | None, learning: Learning,
                    rng: random.Random | None = None) -> float:
    """`prior` corrected by (score sum, count) of quality signals: the Beta posterior's mean, or a sample of it
    (`rng`: Thompson sampling). The prior counts as learning.prior_weight signals."""
    if rng is None and (signals is None or not signals[1]):
        return prior
    total, count = signals or (0.0, 0)
    alpha = prior * learning.prior_weight + total
    beta = (1.0 - prior) * learning.prior_weight + (count - total)
    alpha, beta = max(alpha, 1e-6), max(beta, 1e-6)
    return rng.betavariate(alpha, beta) if rng is not None else alpha / (alpha + beta)


def evaluate(policy: RoutingPolicy, sel: Selection, request: RequestView, health: Mapping[str, ModelHealthView],
             now_ms: int, rng: random.Random | None = None) -> _Evaluated:
    """Filter and price every model the selection may use: its pool, then fallbacks, then the route's models."""
    route, options = sel.route, request.options
    pin_strict = bool(sel.pinned or options.provider) and not options.allow_fallback
    fallbacks = [] if pin_strict else list(route.fallbacks)
    considered = list(dict.fromkeys([*sel.pool, *fallbacks] if sel.pinned else [*sel.pool, *fallbacks, *route.models]))
    features = request.features
    output_tokens = route.expected_output(features.task_type, request.max_tokens)
    models_by_name, task, input_tokens = policy.models, features.task_type, features.input_tokens
    predicted = features.predicted_success
    latency = LatencyParams.of(route.latency)
    learning = route.learning
    # An exploration share of requests ranks by a sample of each model's posterior quality (Thompson).
    sampler = rng if learning.enabled and learning.exploration and rng is not None and \
        rng.random() < learning.exploration else None
    pool_set = set(sel.pool)
    evaluations: dict[str, CandidateEvaluation] = {}
    scored: dict[str, Scored] = {}
    for m in considered:
        model = models_by_name[m]
        h = health.get(m)
        cost = input_tokens * model.in_price + output_tokens * model.out_price
        ttft, total, known = expected_latency(model, h, latency, output_tokens, now_ms)
        # A pinned model is honoured even when live state disfavours it.
        problem = problem_of(policy, model, h, request, cost, ttft, check_live=m != sel.pinned,
                             pinned_provider_applies=pin_strict or m in pool_set)
        # The quality predictor's success for this prompt where it has one, else the policy's static table.
        prediction = predicted.get(m)
        quality = model.quality_for(task) if prediction is None else prediction
        signals = h.quality_signals.get(task) if h is not None and learning.enabled else None
        factors = {"estimated_cost_usd": cost, "expected_ttft_ms": ttft, "expected_total_ms": total}
        if (signals is not None and signals[1]) or sampler is not None:
            factors["quality_prior"], factors["quality_signals"] = quality, signals[1] if signals else 0
            quality = learned_quality(quality, signals, learning, sampler)
            if sampler is not None:
                factors["quality_sampled"] = 1.0
            if prediction is not None:
                prediction = quality
        factors["quality_score"] = quality
        if prediction is not None:
            factors["predicted_success"] = prediction
        if h:
            factors["error_rate"], factors["samples"], factors["in_flight"] = h.error_rate, h.samples, h.in_flight
        evaluations[m] = CandidateEvaluation(m, model.provider, not problem, cost, 0, 0.0, problem, factors)
        if not problem:
            scored[m] = Scored(m, model, cost, ttft, total, quality, h.in_flight if h else 0,
                               h.requests_per_minute if h else 0, known, factors, predicted=prediction is not None)
    return _Evaluated(considered, fallbacks, evaluations, scored)


def order(sel: Selection, scored: Mapping[str, Scored], health: Mapping[str, ModelHealthView],
          state: DecisionState, sticky_model: str, quality: PolicyQuality | None = None) -> tuple[list[str], list[str]]:
    """The pool ranked by the strategy, then exploration, recovery ramps and stickiness; and notes on each."""
    route = sel.route
    ctx = StrategyContext(weights=sel.weights, latency=route.latency, quality=route.quality,
                          rng=state.rng, round_robin=state.round_robin, counter_key=f"{sel.route_name}/{sel.rule}",
                          quality_target=route.quality_target)
    if quality is not None:
        ctx.calibration = quality.curve
    ranked = rank(sel.strategy, [scored[m] for m in sel.pool if m in scored], ctx)
    notes = [ctx.note]
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
    return pool_order, [n for n in notes if n]


def finish(sel: Selection, ev: _Evaluated, pool_order: list[str], notes: list[str], max_tokens: int,
           budget_soft: bool) -> Plan:
    """The plan from the ordered pool and the fallbacks; NoEligibleModel with every reason when none is left."""
    models = pool_order + [m for m in ev.fallbacks if m in ev.scored and m not in pool_order]
    evaluations = ev.evaluations
    for m in ev.considered:
        candidate = evaluations[m]
        if candidate.eligible and m not in models:
            candidate.eligible = False
            candidate.rejection_reason = f"not in the pool of rule {sel.rule!r}" if sel.rule else "not in the selected pool"
    if not models:
        what = f"pinned model {sel.pinned!r}" if sel.pinned else f"route {sel.route_name!r}"
        raise NoEligibleModel(
            f"no model can serve this request ({what}): "
            + "; ".join(f"{m}: {evaluations[m].rejection_reason}" for m in ev.considered),
            metadata={m: evaluations[m].rejection_reason for m in ev.considered},
        )
    for position, m in enumerate(models, start=1):
        evaluations[m].rank = position
        if m in ev.scored:
            evaluations[m].score = ev.scored[m].score
    strategy = "pinned" if sel.pinned else sel.strategy
    how = {"pinned": "", "ordered": "first eligible in order"}.get(strategy, f"{strategy} ranking")
    reason = sel.why if sel.pinned else f"route {sel.route_name!r}: {sel.why}; {how} of {list(sel.pool)}"
    if sel.experiment:
        reason += f"; experiment {sel.experiment!r} variant {sel.variant!r}"
    reason += "".join(f"; {n}" for n in notes)
    return Plan(
        models=models, strategy=strategy, reason=reason, route="" if sel.pinned else sel.route_name, rule=sel.rule,
        max_tokens=max_tokens, experiment=sel.experiment, variant=sel.variant,
        estimated_cost_usd=evaluations[models[0]].estimated_cost_usd, budget_soft_limited=budget_soft,
        candidates=sorted(evaluations.values(), key=lambda e: (not e.eligible, e.rank or 1_000, e.model)),
        settings_route=sel.route_name,
    )


def plan_request(
    policy: RoutingPolicy,
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
    validate_options(policy, options)
    state = state or DecisionState()
    target = resolve_target(policy, requested_model)
    key_allows(options, target, is_route=target in policy.routes)
    keys = policy.request_keys
    request = RequestView(features=features, max_tokens=max_tokens, metadata=metadata, options=options,
                          tenant=metadata.get(keys.tenant, ""), data_class=metadata.get(keys.data_class, ""),
                          text=text)
    sel = select(policy, target, request, state.rng, budget_soft)
    evaluated = evaluate(policy, sel, request, health, int(time.time() * 1000) if now_ms is None else now_ms,
                         state.rng)
    pool_order, notes = order(sel, evaluated.scored, health, state, sticky_model, policy.quality)
    return finish(sel, evaluated, pool_order, notes, max_tokens, budget_soft)
