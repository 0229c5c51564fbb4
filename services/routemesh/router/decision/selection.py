"""Which pool a request draws from: the target (route or pinned model), its experiment variant, its rule."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from routemesh.common.errors import InvalidRequest, KeyNotAllowed, NotFound
from routemesh.common.policy_schema import AUTO, CAPABILITIES, STRATEGIES, Experiment, Route, RuleCondition, Variant, Weights
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.filters import RequestView, RoutingOptionsView, condition_matches


@dataclass(frozen=True, slots=True)
class Selection:
    """Where the pool and strategy came from: route, experiment variant, matched rule, request overrides."""

    route_name: str
    route: Route
    pool: tuple[str, ...]
    strategy: str
    why: str
    weights: Weights
    rule: str = ""
    experiment: str = ""
    variant: str = ""
    pinned: str = ""


def resolve_max_tokens(policy: RoutingPolicy, requested: int) -> int:
    """The request's max_tokens, or the policy default for 0."""
    if requested < 0:
        raise InvalidRequest("max_tokens must not be negative",
                             field_violations=[("max_tokens", f"got {requested}; use 0 for the default")])
    return requested or policy.default_max_tokens


def validate_options(policy: RoutingPolicy, options: RoutingOptionsView) -> None:
    """Raise InvalidRequest or NotFound for routing options the policy cannot honour."""
    problems = []
    if options.strategy and options.strategy not in STRATEGIES:
        problems.append(("routing.strategy", f"unknown strategy {options.strategy!r}; known: {list(STRATEGIES)}"))
    bad_caps = [c for c in options.required_capabilities if c not in CAPABILITIES]
    if bad_caps:
        problems.append(("routing.required_capabilities", f"unknown {bad_caps}; known: {list(CAPABILITIES)}"))
    # `not x >= 0` rather than `x < 0`: NaN compares false to everything and must not pass as "not negative".
    if options.max_cost_usd is not None and not 0 <= options.max_cost_usd < math.inf:
        problems.append(("routing.max_cost_usd", "must be a finite number, not negative"))
    if options.latency_target_ms is not None and not 0 < options.latency_target_ms < math.inf:
        problems.append(("routing.latency_target_ms", "must be a finite positive number"))
    if problems:
        raise InvalidRequest("invalid routing options", field_violations=problems)
    if options.provider and options.provider not in policy.providers:
        raise NotFound(f"unknown provider {options.provider!r}", reason="UNKNOWN_PROVIDER",
                       field_violations=[("routing.provider", f"defined: {sorted(policy.providers)}")])


def key_allows(options: RoutingOptionsView, target: str, is_route: bool) -> None:
    """KeyNotAllowed when the request's API key may not name this route or pin this model."""
    allowed = options.key_routes if is_route else options.key_models
    if allowed is not None and target not in allowed:
        what = "route" if is_route else "model"
        raise KeyNotAllowed(f"this API key may not use {what} {target!r}",
                            field_violations=[("model", f"the key allows {what}s {sorted(allowed)}")])


def resolve_target(policy: RoutingPolicy, requested_model: str) -> str:
    """The route or model a request names ('' and 'auto' mean the default route); NotFound otherwise."""
    name = requested_model.strip() or AUTO
    if name == AUTO:
        name = policy.default_route
    if name not in policy.routes and name not in policy.models:
        raise NotFound(
            f"unknown model or route {requested_model!r}", reason="UNKNOWN_MODEL",
            metadata={"routes": ",".join(sorted(policy.routes)), "models": ",".join(sorted(policy.models))},
            field_violations=[("model", f"not a route ({', '.join(sorted(policy.routes))}), a model, or 'auto'")],
        )
    return name


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


def select(policy: RoutingPolicy, target: str, request: RequestView, rng: random.Random,
           budget_soft: bool) -> Selection:
    """The pool and strategy for `target`: a pinned model alone, or the route after experiment and rules."""
    if target in policy.models:
        default = policy.default_route
        route = policy.routes[default]
        return Selection(default, route, (target,), "ordered", f"model {target!r} pinned by the request",
                         route.weights, pinned=target)
    route = policy.routes[target]
    pool, strategy, weights = route.models, route.strategy, route.weights
    experiment = variant_name = ""
    if route.experiment:
        variant = assign_variant(route.experiment, request.metadata, rng)
        experiment, variant_name = route.experiment.name, variant.name
        pool, strategy = variant.models or pool, variant.strategy or strategy
        weights = variant.weights or weights
    rule = next((r for r in route.rules if condition_matches(r.when, request)), None)
    if rule:
        pool = (rule.model,) if rule.model else (rule.models or pool)
        strategy = rule.strategy or strategy
        why = f"rule {rule.name!r} matched ({describe(rule.when, request)})"
    else:
        why = "no rule matched"
    options = request.options
    if options.strategy:
        strategy, why = options.strategy, why + f"; strategy {options.strategy} requested"
    if budget_soft:
        strategy, why = "cost", why + "; budget past its soft limit: cheapest first"
    return Selection(target, route, tuple(pool), strategy, why, weights, rule=rule.name if rule else "",
                     experiment=experiment, variant=variant_name)


def describe(cond: RuleCondition, request: RequestView) -> str:
    """The request values a rule condition looked at, for the decision's reason."""
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
