"""Ranking strategies: each orders the eligible pool and records per-factor scores on every candidate."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from routemesh.common.policy_schema import LatencySettings, QualitySettings, Weights
from routemesh.quality.artifact import ThresholdCurve
from routemesh.router.decision.compiled import CompiledModel


@dataclass(frozen=True)
class ModelHealthView:
    """What the router reads of a model's live health (from telemetry)."""

    samples: int = 0
    error_rate: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p90_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    tpot_p50_ms: float = 0.0
    tpot_p99_ms: float = 0.0
    in_flight: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    last_observation_ms: int = 0
    circuit_open: bool = False
    # Share of eligible traffic to send: probes while the breaker is half-open, a ramp after it closes.
    admit_fraction: float = 1.0
    circuit_half_open: bool = False
    # Quality signals (feedback, automatic) per task type: (score sum, count); see policy_schema.Learning.
    quality_signals: Mapping[str, tuple[float, int]] = field(default_factory=dict)


@dataclass(slots=True)
class Scored:
    """One eligible candidate with what the strategies need to rank it."""

    name: str
    model: CompiledModel
    estimated_cost_usd: float
    expected_ttft_ms: float
    expected_total_ms: float
    quality: float
    in_flight: int
    recent_requests: int
    latency_known: bool
    factors: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    # Whether `quality` is the quality predictor's predicted success for this request (else the static table's).
    predicted: bool = False


@dataclass(frozen=True, slots=True)
class LatencyParams:
    """A route's latency settings as plain values (read once per decision, not per candidate)."""

    percentile: str
    min_samples: int
    freshness_ms: float

    @classmethod
    def of(cls, settings: LatencySettings) -> LatencyParams:
        return cls(settings.percentile, settings.min_samples, settings.freshness_s * 1000)


def expected_latency(model: CompiledModel, health: ModelHealthView | None, params: LatencyParams,
                     output_tokens: int, now_ms: int) -> tuple[float, float, bool]:
    """(TTFT, whole answer) in ms from fresh telemetry at the route's percentile, else the model's prior."""
    if (health is not None and health.samples >= params.min_samples and health.ttft_p50_ms > 0
            and now_ms - health.last_observation_ms <= params.freshness_ms):
        percentile = params.percentile
        if percentile == "p50":
            ttft, tpot = health.ttft_p50_ms, health.tpot_p50_ms
        elif percentile == "p90":
            ttft, tpot = health.ttft_p90_ms or health.ttft_p50_ms, health.tpot_p50_ms
        else:
            ttft, tpot = health.ttft_p99_ms or health.ttft_p50_ms, health.tpot_p99_ms
        return ttft, ttft + output_tokens * tpot, True
    return model.prior_ttft_ms, model.prior_ttft_ms + output_tokens * model.prior_tpot_ms, False


def _ratio_factors(pool: Sequence[Scored]) -> None:
    """Per-factor scores in 0..1, 1 = best of the pool (ratios, so 0.5 means twice as costly or slow)."""
    # One pass for the bests and one to score (this runs for every candidate of every request).
    first = pool[0]
    cheapest, fastest, best_quality, busy = (first.estimated_cost_usd, first.expected_total_ms, first.quality,
                                             first.in_flight)
    for c in pool:
        if c.estimated_cost_usd < cheapest:
            cheapest = c.estimated_cost_usd
        if c.expected_total_ms < fastest:
            fastest = c.expected_total_ms
        if c.quality > best_quality:
            best_quality = c.quality
        if c.in_flight < busy:
            busy = c.in_flight
    best_quality = best_quality or 1.0
    least_busy = 1 + busy
    for c in pool:
        cost, total, f = c.estimated_cost_usd, c.expected_total_ms, c.factors
        f["cost"] = cheapest / cost if cost > 0 else 1.0
        f["latency"] = fastest / total if total > 0 else 1.0
        f["quality"] = c.quality / best_quality
        f["load"] = least_busy / (1 + c.in_flight)


@dataclass
class StrategyContext:
    """Route settings and shared state a strategy may use."""

    weights: Weights
    latency: LatencySettings
    quality: QualitySettings
    rng: random.Random
    round_robin: Callable[[str, int], int]  # (counter key, pool size) -> index to start from
    counter_key: str = ""
    # quality_target: the share of the best candidate's quality to keep, and the calibrated thresholds
    # between two models' predictions ((weaker, stronger) -> curve, None when not calibrated).
    quality_target: float = 0.95
    calibration: Callable[[str, str], ThresholdCurve | None] = lambda weaker, stronger: None
    # What the strategy wants said in the decision's reason ("" for nothing).
    note: str = ""


def _by(pool: list[Scored], key: Callable[[Scored], tuple]) -> list[Scored]:
    return sorted(pool, key=key)


def rank_hybrid(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    w = ctx.weights
    total = (w.cost + w.latency + w.quality + w.load) or 1.0
    wc, wl, wq, wd = w.cost / total, w.latency / total, w.quality / total, w.load / total
    for c in pool:
        f = c.factors
        c.score = wc * f["cost"] + wl * f["latency"] + wq * f["quality"] + wd * f["load"]
    return _by(pool, lambda c: (-c.score, c.estimated_cost_usd, c.name))


def rank_cost(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    for c in pool:
        c.score = c.factors["cost"]
    return _by(pool, lambda c: (c.estimated_cost_usd, -c.quality, c.name))


def rank_latency(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    # Models within the tolerance band of the fastest tie; ties go to the cheaper one.
    fastest = min(c.expected_total_ms for c in pool)
    band = fastest * (1 + ctx.latency.tolerance)
    for c in pool:
        c.score = c.factors["latency"]
        c.factors["in_band"] = 1.0 if c.expected_total_ms <= band else 0.0
    return _by(pool, lambda c: (c.expected_total_ms > band, c.expected_total_ms if c.expected_total_ms > band else 0,
                                c.estimated_cost_usd, c.name))


def rank_quality(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    best = max(c.quality for c in pool)
    floor = best - ctx.quality.threshold
    for c in pool:
        c.score = c.factors["quality"]
    if ctx.quality.threshold <= 0:
        return _by(pool, lambda c: (-c.quality, c.estimated_cost_usd, c.name))
    # The cheapest of those close enough to the best, then the rest by quality.
    return _by(pool, lambda c: (c.quality < floor, c.estimated_cost_usd if c.quality >= floor else -c.quality, c.name))


def _keeps_target(candidate: Scored, best: Scored, ctx: StrategyContext) -> tuple[bool, str]:
    """Whether serving `candidate` instead of `best` keeps the target share of quality, and how that was judged.

    Both predicted, with calibrated thresholds for the pair: the gap in predicted success must not exceed the
    threshold train fitted on held-out outcomes for this target. Otherwise: candidate >= target x best.
    """
    gap = best.quality - candidate.quality
    curve = ctx.calibration(candidate.name, best.name) if candidate.predicted and best.predicted else None
    if curve is not None:
        allowed = curve.threshold(ctx.quality_target)
        candidate.factors["quality_gap_allowed"] = allowed
        verdict = "<=" if gap <= allowed else ">"
        return gap <= allowed, f"gap {gap:.3f} {verdict} {allowed:.3f} calibrated for {ctx.quality_target:.0%}"
    floor = ctx.quality_target * best.quality
    kind = "predicted" if candidate.predicted else "static"
    verdict = ">=" if candidate.quality >= floor else "<"
    return candidate.quality >= floor, f"{kind} quality {candidate.quality:.3f} {verdict} {ctx.quality_target:.0%} " \
                                       f"of {best.quality:.3f}"


def rank_quality_target(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    """The cheapest model expected to keep `quality_target` of the best candidate's quality, then by quality."""
    best = min(pool, key=lambda c: (-c.quality, c.estimated_cost_usd, c.name))
    chosen, why, said = best, "", []
    for c in sorted(pool, key=lambda c: (c.estimated_cost_usd, -c.quality, c.name)):
        c.score = c.factors["quality"]
        if c is best:
            break
        c.factors["quality_gap"] = best.quality - c.quality
        keeps, why = _keeps_target(c, best, ctx)
        if keeps:
            chosen = c
            break
        said.append(f"{c.name} below target ({why})")
    source = "predicted success" if best.predicted else "static quality"
    said.append(f"{chosen.name} keeps {ctx.quality_target:.0%} of {best.name} ({why})" if chosen is not best
                else f"{best.name} has the best {source} ({best.quality:.3f})")
    ctx.note = ", ".join(said)
    return [chosen, *sorted((c for c in pool if c is not chosen), key=lambda c: (-c.quality, c.estimated_cost_usd, c.name))]


def rank_ordered(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    for rank, c in enumerate(pool):
        c.score = 1.0 - rank / len(pool)
    return list(pool)


def rank_weighted_random(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    remaining = list(pool)
    ordered: list[Scored] = []
    while remaining:
        weights = [max(c.model.weight, 0.0) for c in remaining]
        if sum(weights) <= 0:
            ordered.extend(remaining)
            break
        pick = ctx.rng.choices(range(len(remaining)), weights=weights)[0]
        ordered.append(remaining.pop(pick))
    total = sum(c.model.weight for c in pool) or 1.0
    for c in pool:
        c.score = c.model.weight / total
    return ordered


def rank_round_robin(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    start = ctx.round_robin(ctx.counter_key, len(pool))
    ordered = pool[start:] + pool[:start]
    for rank, c in enumerate(ordered):
        c.score = 1.0 - rank / len(pool)
    return ordered


def rank_least_in_flight(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    for c in pool:
        c.score = c.factors["load"]
    return _by(pool, lambda c: (c.in_flight, c.estimated_cost_usd, c.name))


def rank_least_recent(pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    least = min(c.recent_requests for c in pool)
    for c in pool:
        c.score = (1 + least) / (1 + c.recent_requests)
    return _by(pool, lambda c: (c.recent_requests, c.estimated_cost_usd, c.name))


RANKERS: Mapping[str, Callable[[list[Scored], StrategyContext], list[Scored]]] = {
    "hybrid": rank_hybrid,
    "cost": rank_cost,
    "latency": rank_latency,
    "quality": rank_quality,
    "quality_target": rank_quality_target,
    "ordered": rank_ordered,
    "weighted_random": rank_weighted_random,
    "round_robin": rank_round_robin,
    "least_in_flight": rank_least_in_flight,
    "least_recent": rank_least_recent,
}


def rank(strategy: str, pool: list[Scored], ctx: StrategyContext) -> list[Scored]:
    """Order the eligible pool by `strategy`; every candidate gets its factor scores and a score."""
    if not pool:
        return []
    _ratio_factors(pool)
    return RANKERS[strategy](pool, ctx)


def explore(ranked: list[Scored], ctx: StrategyContext) -> tuple[list[Scored], str]:
    """Now and then put a model without fresh latency numbers first, so its numbers stay real."""
    unknown = [c for c in ranked[1:] if not c.latency_known]
    if not unknown or ctx.latency.explore_rate <= 0 or ctx.rng.random() >= ctx.latency.explore_rate:
        return ranked, ""
    chosen = ctx.rng.choice(unknown)
    return [chosen, *[c for c in ranked if c is not chosen]], f"exploring {chosen.name} (no fresh latency numbers)"
