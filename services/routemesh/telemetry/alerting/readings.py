"""Each rule kind measured on its subjects: plain functions from health, tallies and spend to readings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from routemesh.common.outcomes import CircuitState
from routemesh.common.policy_alerts import (
    BudgetRule,
    ErrorRateRule,
    FailoverRateRule,
    LatencyRule,
    OutageRule,
)
from routemesh.common.policy_schema import Policy
from routemesh.router.admission.budget import BudgetScope
from routemesh.telemetry.alerting.tallies import FailoverTally
from routemesh.telemetry.alerting.tracker import Reading
from routemesh.telemetry.store import ModelStats

_CIRCUIT_NAMES = {CircuitState.OPEN: "open", CircuitState.HALF_OPEN: "half-open"}


def _models(rule: OutageRule | ErrorRateRule | LatencyRule, policy: Policy) -> list[str]:
    return [m for m in (rule.models or policy.models) if m in policy.models]


def _by_provider(models: Sequence[str], policy: Policy) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for model in models:
        groups.setdefault(policy.models[model].provider, []).append(model)
    return groups


def outage(rule: OutageRule, policy: Policy, stats: Mapping[str, ModelStats]) -> list[Reading]:
    """A model whose breaker is open or half-open (not yet trusted again); per provider, all its models."""
    models = _models(rule, policy)
    broken = {m: _CIRCUIT_NAMES.get(stats[m].circuit.state) for m in models if m in stats}
    if rule.per == "model":
        return [Reading(f"model={m}", state is not None, 1.0 if state else 0.0, 1.0,
                        f"{m}: circuit breaker {state or 'closed'}") for m, state in broken.items()]
    out = []
    for provider, group in _by_provider(models, policy).items():
        down = [m for m in group if broken.get(m)]
        out.append(Reading(f"provider={provider}", len(down) == len(group), len(down) / len(group), 1.0,
                           f"provider {provider}: {len(down)} of {len(group)} models' breakers open"))
    return out


def error_rate(rule: ErrorRateRule, policy: Policy, stats: Mapping[str, ModelStats], window_s: int) -> list[Reading]:
    """A model's (or provider's, weighted by samples) error rate in telemetry's window, with enough samples."""
    models = [m for m in _models(rule, policy) if m in stats]
    groups = ({f"model={m}": [m] for m in models} if rule.per == "model"
              else {f"provider={p}": group for p, group in _by_provider(models, policy).items()})
    out = []
    for subject, group in groups.items():
        samples = sum(stats[m].samples for m in group)
        rate = sum(stats[m].error_rate * stats[m].samples for m in group) / samples if samples else 0.0
        name = subject.partition("=")[2]
        summary = (f"{name}: error rate {rate:.0%} over {samples} attempts in {window_s} s (above {rule.above:.0%})"
                   if samples >= rule.min_samples else f"{name}: {samples} attempts in {window_s} s, fewer than "
                                                       f"{rule.min_samples}")
        out.append(Reading(subject, samples >= rule.min_samples and rate > rule.above, rate, rule.above, summary))
    return out


def latency(rule: LatencyRule, policy: Policy, stats: Mapping[str, ModelStats], window_s: int) -> list[Reading]:
    """A model's TTFT percentile in telemetry's window above the bound, with enough samples."""
    out = []
    for model in _models(rule, policy):
        entry = stats.get(model)
        if entry is None:
            continue
        value = {50: entry.ttft_p50_ms, 90: entry.ttft_p90_ms, 99: entry.ttft_p99_ms}[rule.percentile]
        enough = entry.samples >= rule.min_samples
        out.append(Reading(f"model={model}", enough and value > rule.above_ms, value, rule.above_ms,
                           f"{model}: TTFT p{rule.percentile} {value:.0f} ms over {window_s} s "
                           f"(bound {rule.above_ms:.0f} ms, {entry.samples} samples)"))
    return out


def failover_rate(rule: FailoverRateRule, policy: Policy, tally: FailoverTally, now_s: int) -> list[Reading]:
    """The share of a route's requests in the rule's window that needed more than one attempt."""
    out = []
    for route in rule.routes or policy.routes:
        requests, failovers = tally.counts(route, rule.window_s, now_s)
        rate = failovers / requests if requests else 0.0
        out.append(Reading(f"route={route}", requests >= rule.min_requests and rate > rule.above, rate, rule.above,
                           f"route {route}: {failovers} of {requests} requests failed over in {rule.window_s:g} s "
                           f"({rate:.0%}, bound {rule.above:.0%})"))
    return out


def budget(rule: BudgetRule, scopes: Sequence[BudgetScope], spent: Mapping[str, float],
           period_ids: Mapping[str, str]) -> list[Reading]:
    """A budget account's spend this period as a fraction of its limit, past the rule's fraction."""
    out = []
    for scope in scopes:
        if rule.budget is not None and scope.budget != rule.budget or scope.account not in spent:
            continue
        usd = spent[scope.account]
        share = usd / scope.limit_usd
        out.append(Reading(f"budget={scope.budget}/{scope.key}", share >= rule.fraction, share, rule.fraction,
                           f"budget {scope.budget} ({scope.key}, {scope.period} {period_ids[scope.account]}): "
                           f"${usd:.4f} of ${scope.limit_usd:.2f} spent ({share:.0%}, bound {rule.fraction:.0%})"))
    return out
