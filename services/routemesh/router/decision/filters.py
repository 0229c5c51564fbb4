"""Eligibility filters every strategy honours; each returns why a model cannot serve, or ""."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import re2

from routemesh.common.policy_schema import RuleCondition, compile_rule_regex
from routemesh.router.decision.compiled import CompiledModel, RoutingPolicy
from routemesh.router.decision.strategies import ModelHealthView


@dataclass(frozen=True)
class RoutingFeatures:
    """What the planner reads of a request (from the classifier, or the router's local fallback)."""

    input_tokens: int
    task_type: str = "chat"
    language: str = "und"
    complexity: float = 0.0
    has_code: bool = False
    # Per policy model, the quality predictor's predicted success; a model absent here keeps its static quality.
    predicted_success: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingOptionsView:
    """Per-request routing control (RoutingOptions without protobuf)."""

    strategy: str = ""
    max_cost_usd: float | None = None
    latency_target_ms: float | None = None
    allow_fallback: bool = False
    provider: str = ""
    required_capabilities: tuple[str, ...] = ()
    # What the request's API key may use (None: no key, or a key without that limit).
    key_models: frozenset[str] | None = None
    key_routes: frozenset[str] | None = None


@dataclass(frozen=True)
class RequestView:
    """The request as the filters see it."""

    features: RoutingFeatures
    max_tokens: int
    metadata: Mapping[str, str]
    options: RoutingOptionsView
    tenant: str = ""
    data_class: str = ""
    text: str = ""


# A rule's regex reads at most this many characters from the start of the last user message. RE2's time is
# linear in the text (about 2 ms per MB for a plain pattern, tens of ms for one whose DFA keeps missing its
# cache), and a message may be up to gRPC's 64 MB: the bound keeps each rule to milliseconds on the event loop.
# In a longer message, what lies past the bound is unseen, and `$` or `\z` match at the end of what is read.
REGEX_TEXT_CHARS = 1 << 20


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re2._Regexp:
    return compile_rule_regex(pattern)


def regex_matches(pattern: str, text: str) -> bool:
    """The rule's pattern occurs in the first REGEX_TEXT_CHARS characters of the text (case-insensitive)."""
    # Searching bytes, not str: for a str, the re2 wrapper maps every match offset back to characters; a
    # rule needs only yes or no. surrogatepass: a lone surrogate (possible in-process) must not raise here.
    return _compiled(pattern).search(text[:REGEX_TEXT_CHARS].encode("utf-8", "surrogatepass")) is not None


def condition_matches(cond: RuleCondition, request: RequestView) -> bool:
    """All stated fields of the condition hold for the request."""
    f = request.features
    if cond.task_types and f.task_type not in cond.task_types:
        return False
    if cond.min_input_tokens is not None and f.input_tokens < cond.min_input_tokens:
        return False
    if cond.max_input_tokens is not None and f.input_tokens > cond.max_input_tokens:
        return False
    if cond.min_complexity is not None and f.complexity < cond.min_complexity:
        return False
    if cond.has_code is not None and f.has_code != cond.has_code:
        return False
    if cond.languages and f.language not in cond.languages:
        return False
    if cond.keywords:
        lowered = request.text[:REGEX_TEXT_CHARS].lower()  # as much as a regex reads, for the same reason
        if not any(word.lower() in lowered for word in cond.keywords):
            return False
    if cond.regex is not None and not regex_matches(cond.regex, request.text):
        return False
    return all(request.metadata.get(k) == v for k, v in cond.metadata.items())


def fit_problem(model: CompiledModel, request: RequestView) -> str:
    """Static reasons: disabled, too small, missing capability, not allowed for the tenant or data class."""
    if not model.enabled:
        return "disabled in the policy"
    inputs = request.features.input_tokens
    if inputs + request.max_tokens > model.context_window:
        return f"context window {model.context_window} < {inputs} input + {request.max_tokens} output tokens"
    if request.max_tokens > model.max_output_tokens:
        return f"max_tokens {request.max_tokens} > the model's max output {model.max_output_tokens}"
    missing = [c for c in request.options.required_capabilities if c not in model.capabilities]
    if missing:
        return f"lacks capability {', '.join(missing)}"
    if request.data_class and request.data_class not in model.data_classes:
        return f"not cleared for {request.data_class!r} data"
    return ""


def tenant_problem(policy: RoutingPolicy, name: str, request: RequestView) -> str:
    allowed = policy.allowed.get(request.tenant)
    if allowed is not None and name not in allowed:
        return f"not allowed for tenant {request.tenant!r}"
    key_models = request.options.key_models
    if key_models is not None and name not in key_models:
        return "not allowed for the request's API key"
    return ""


def live_problem(policy: RoutingPolicy, model: CompiledModel, health: ModelHealthView | None) -> str:
    """Reasons from live state: open circuit, unhealthy, rate limit exhausted."""
    if health is None:
        return ""
    if health.circuit_open:
        return "circuit open"
    if health.samples >= policy.min_samples and health.error_rate > policy.max_error_rate:
        return (f"unhealthy: error rate {health.error_rate:.0%} over {health.samples} recent attempts "
                f"> {policy.max_error_rate:.0%}")
    if model.rpm and health.requests_per_minute >= model.rpm:
        return f"rate limit: {health.requests_per_minute} requests in the last minute >= rpm {model.rpm}"
    if model.tpm and health.tokens_per_minute >= model.tpm:
        return f"rate limit: {health.tokens_per_minute} tokens in the last minute >= tpm {model.tpm}"
    return ""


def request_limit_problem(request: RequestView, cost: float, ttft_ms: float) -> str:
    """The request's own bounds: max_cost and latency target."""
    opts = request.options
    if opts.max_cost_usd is not None and cost > opts.max_cost_usd:
        return f"estimated cost ${cost:.6f} > max_cost ${opts.max_cost_usd:.6f}"
    if opts.latency_target_ms is not None and ttft_ms > opts.latency_target_ms:
        return f"expected first token in {ttft_ms:.0f} ms > target {opts.latency_target_ms:.0f} ms"
    return ""


def problem_of(policy: RoutingPolicy, model: CompiledModel, health: ModelHealthView | None, request: RequestView,
               cost: float, ttft_ms: float, *, pinned_provider_applies: bool, check_live: bool) -> str:
    """Every filter in order, in one call (it runs for each candidate of each request)."""
    problem = fit_problem(model, request) or tenant_problem(policy, model.name, request)
    if problem:
        return problem
    provider = request.options.provider
    if provider and pinned_provider_applies and model.provider != provider:
        return f"provider {model.provider!r} is not the pinned provider {provider!r}"
    if check_live and health is not None:
        problem = live_problem(policy, model, health)
        if problem:
            return problem
    if request.options.max_cost_usd is None and request.options.latency_target_ms is None:
        return ""
    return request_limit_problem(request, cost, ttft_ms)
