"""Live model health from attempt observations: the HealthStore protocol and its in-memory store."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Protocol

from routemesh.common.circuit import CLOSED_VIEW, CircuitView, circuit_from_history, counts_as_failure
from routemesh.common.outcomes import AttemptOutcome, ObservationPhase
from routemesh.common.policy_schema import CircuitSettings
from routemesh.common.stats import percentile
from routemesh.telemetry.experiments import (
    MAX_VARIANT_SAMPLES,
    MemoryExperiments,
    RequestSummaryRecord,
    VariantStatsRecord,
)

DEFAULT_WINDOW_S = 300
MAX_SAMPLES = 500
RATE_WINDOW_S = 60
# A started attempt whose finish never arrives (crashed executor) stops counting after this many minutes.
IN_FLIGHT_HORIZON_MIN = 10
# Models not observed for a day drop out of "every model seen".
SEEN_HORIZON_MS = 24 * 3600 * 1000
DEFAULT_CACHE_TTL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationRecord:
    """What an executor saw of one attempt, as the store keeps it."""

    model: str
    timestamp_ms: int
    provider: str = ""
    phase: ObservationPhase = ObservationPhase.FINISHED
    # A plain int when a newer executor sent a value this build lacks: an error, but not one the breaker counts.
    outcome: AttemptOutcome | int = AttemptOutcome.SUCCESS
    ttft_ms: float = 0.0
    tpot_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    decision_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelStats:
    """Live state of one model; `stale` means the backing store was unreachable and this is the last known."""

    model: str
    samples: int = 0
    ttft_p50_ms: float = 0.0
    ttft_p90_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    tpot_p50_ms: float = 0.0
    tpot_p99_ms: float = 0.0
    error_rate: float = 0.0
    in_flight: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    spend_per_minute_usd: float = 0.0
    spend_total_usd: float = 0.0
    last_observation_ms: int = 0
    stale: bool = False
    circuit: CircuitView = CLOSED_VIEW


class StoreUnavailable(Exception):
    """The backing store cannot be read; raised only by experiment_report."""


class HealthStore(Protocol):
    """Where observations go and snapshots come from.

    Nothing on the routing path raises when the backend is down: writes are dropped and snapshots are
    served stale. experiment_report, an operator's read, raises StoreUnavailable instead of answering
    with figures nobody can tell apart from an idle experiment.
    """

    window_s: int

    async def record(self, observations: Sequence[ObservationRecord]) -> None: ...

    async def record_requests(self, requests: Sequence[RequestSummaryRecord]) -> None: ...

    async def experiment_report(self, experiment: str | None, now_ms: int) -> list[VariantStatsRecord]: ...

    async def snapshot(self, models: Sequence[str], now_ms: int,
                       circuit: CircuitSettings | None = None) -> dict[str, ModelStats]: ...

    async def seen_models(self, now_ms: int) -> list[str]: ...

    async def close(self) -> None: ...


# One finished attempt as the window keeps it: (timestamp_ms, outcome, ttft_ms, tpot_ms).
FinishedSample = tuple[int, int, float, float]


@dataclass(slots=True)
class SecondTotals:
    """Attempts started, tokens used and USD spent within one second."""

    requests: int = 0
    tokens: int = 0
    spend: float = 0.0


# Say nothing about a model's health: the caller went away, another attempt won, or it was never sent.
NOT_JUDGED = frozenset({AttemptOutcome.CANCELLED, AttemptOutcome.HEDGE_LOST, AttemptOutcome.CIRCUIT_OPEN,
                        AttemptOutcome.RETRY_BUDGET_EXHAUSTED})
DEFAULT_CIRCUIT = CircuitSettings()
_timestamp = itemgetter(0)


def is_error(outcome: int) -> bool:
    """Failures count against a model; attempts that were not judged (see NOT_JUDGED) are not errors."""
    return outcome != AttemptOutcome.SUCCESS and outcome not in NOT_JUDGED


def compute_stats(
    model: str,
    finished: Iterable[FinishedSample],
    seconds: Mapping[int, SecondTotals],
    open_by_minute: Mapping[int, int],
    spend_total: float,
    now_ms: int,
    window_s: int,
    circuit: CircuitSettings = DEFAULT_CIRCUIT,
) -> ModelStats:
    """ModelStats as of now_ms from raw window contents; both stores share it so their answers agree.

    `finished` comes in arrival order: results with equal timestamps replay in that order in the breaker.
    """
    cutoff_ms = now_ms - window_s * 1000
    samples = errors = judged = 0
    newest_ms = 0
    ttfts: list[float] = []
    tpots: list[float] = []
    history: list[tuple[int, bool]] = []
    for ts, outcome, ttft, tpot in finished:
        if not cutoff_ms < ts <= now_ms:
            continue
        samples += 1
        newest_ms = max(newest_ms, ts)
        failed = counts_as_failure(outcome)
        if failed is not None:
            history.append((ts, not failed))
        if outcome in NOT_JUDGED:
            continue
        judged += 1
        if is_error(outcome):
            errors += 1
        elif ttft > 0:
            ttfts.append(ttft)
            if tpot > 0:
                tpots.append(tpot)
    ttfts.sort()
    tpots.sort()
    # Stable: ties keep arrival order, which every replica reading the same list sees alike.
    history.sort(key=_timestamp)
    now_s, now_min = now_ms // 1000, now_ms // 60_000
    recent = [totals for sec, totals in seconds.items() if now_s - RATE_WINDOW_S < sec <= now_s]
    oldest_minute = now_min - IN_FLIGHT_HORIZON_MIN
    open_count = sum(n for minute, n in open_by_minute.items() if oldest_minute < minute <= now_min)
    return ModelStats(
        model=model,
        samples=samples,
        ttft_p50_ms=percentile(ttfts, 0.50),
        ttft_p90_ms=percentile(ttfts, 0.90),
        ttft_p99_ms=percentile(ttfts, 0.99),
        tpot_p50_ms=percentile(tpots, 0.50),
        tpot_p99_ms=percentile(tpots, 0.99),
        error_rate=errors / judged if judged else 0.0,
        in_flight=max(0, open_count),
        requests_per_minute=sum(t.requests for t in recent),
        tokens_per_minute=sum(t.tokens for t in recent),
        spend_per_minute_usd=sum(t.spend for t in recent),
        spend_total_usd=spend_total,
        last_observation_ms=newest_ms,
        circuit=circuit_from_history(history, circuit, now_ms),
    )


class SnapshotCache:
    """Recent snapshot answers, so a burst of readers shares one computation.

    invalidate() drops every answer and refuses answers computed before it: a report of failures must
    show in the next snapshot, since that is what trips a breaker.
    """

    def __init__(self, ttl_s: float, max_entries: int = 64):
        self.ttl_s = ttl_s
        self.generation = 0
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, int, dict[str, ModelStats]]] = {}

    def get(self, key: Hashable, now_ms: int) -> dict[str, ModelStats] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        computed_at, as_of_ms, stats = entry
        # An answer "as of" a clearly different moment (tests inject time) is not the one asked for.
        if time.monotonic() - computed_at > self.ttl_s or abs(now_ms - as_of_ms) > self.ttl_s * 1000:
            return None
        return dict(stats)

    def put(self, key: Hashable, now_ms: int, stats: dict[str, ModelStats], generation: int | None = None) -> None:
        """Keep an answer, unless it was computed (from generation `generation`) before an invalidate()."""
        if self.ttl_s <= 0 or (generation is not None and generation != self.generation):
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), now_ms, dict(stats))

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()


def has_failures(observations: Iterable[ObservationRecord]) -> bool:
    """Whether any finished attempt failed in a way the circuit breaker counts."""
    return any(obs.phase == ObservationPhase.FINISHED and counts_as_failure(obs.outcome) for obs in observations)


def unique(models: Sequence[str]) -> tuple[str, ...]:
    """Models in first-seen order without repeats."""
    return tuple(dict.fromkeys(models))


class _ModelWindow:
    """Everything the in-memory store keeps about one model."""

    def __init__(self, max_samples: int):
        self.finished: deque[FinishedSample] = deque(maxlen=max_samples)
        self.seconds: dict[int, SecondTotals] = {}
        self.open_by_minute: dict[int, int] = defaultdict(int)
        self.spend_total = 0.0
        self.newest_ms = 0

    def add(self, obs: ObservationRecord) -> None:
        ts = obs.timestamp_ms
        self.newest_ms = max(self.newest_ms, ts)
        totals = self.seconds.setdefault(ts // 1000, SecondTotals())
        if obs.phase == ObservationPhase.STARTED:
            self.open_by_minute[ts // 60_000] += 1
            totals.requests += 1
            return
        self.open_by_minute[ts // 60_000] -= 1
        self.finished.append((ts, int(obs.outcome), obs.ttft_ms, obs.tpot_ms))
        totals.tokens += obs.input_tokens + obs.output_tokens
        totals.spend += obs.cost_usd
        self.spend_total += obs.cost_usd

    def prune(self) -> None:
        """Drop buckets too old to matter, so memory stays bounded however long the process runs."""
        oldest_second = self.newest_ms // 1000 - 2 * RATE_WINDOW_S
        if len(self.seconds) > 4 * RATE_WINDOW_S:
            self.seconds = {s: t for s, t in self.seconds.items() if s > oldest_second}
        oldest_minute = self.newest_ms // 60_000 - 2 * IN_FLIGHT_HORIZON_MIN
        if len(self.open_by_minute) > 4 * IN_FLIGHT_HORIZON_MIN:
            kept = {m: n for m, n in self.open_by_minute.items() if m > oldest_minute}
            self.open_by_minute = defaultdict(int, kept)


class InMemoryHealthStore:
    """Health of every model in this process's memory: the default when one telemetry replica runs."""

    def __init__(
        self,
        window_s: int = DEFAULT_WINDOW_S,
        *,
        max_samples: int = MAX_SAMPLES,
        max_variant_samples: int = MAX_VARIANT_SAMPLES,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
    ):
        self.window_s = window_s
        self._max_samples = max_samples
        self._models: dict[str, _ModelWindow] = {}
        self._seen_ms: dict[str, int] = {}
        self._cache = SnapshotCache(cache_ttl_s)
        self._experiments = MemoryExperiments(window_s, max_variant_samples)

    async def record(self, observations: Sequence[ObservationRecord]) -> None:
        touched: set[str] = set()
        for obs in observations:
            window = self._models.get(obs.model)
            if window is None:
                window = self._models[obs.model] = _ModelWindow(self._max_samples)
            window.add(obs)
            self._seen_ms[obs.model] = max(self._seen_ms.get(obs.model, 0), obs.timestamp_ms)
            touched.add(obs.model)
        for model in touched:
            self._models[model].prune()
        if has_failures(observations):
            self._cache.invalidate()

    async def record_requests(self, requests: Sequence[RequestSummaryRecord]) -> None:
        self._experiments.record(requests)

    async def experiment_report(self, experiment: str | None, now_ms: int) -> list[VariantStatsRecord]:
        return self._experiments.report(experiment, now_ms)

    async def snapshot(self, models: Sequence[str], now_ms: int,
                       circuit: CircuitSettings | None = None) -> dict[str, ModelStats]:
        names, settings = unique(models), circuit or DEFAULT_CIRCUIT
        cached = self._cache.get((names, settings), now_ms)
        if cached is not None:
            return cached
        stats = {name: self._stats(name, now_ms, settings) for name in names}
        self._cache.put((names, settings), now_ms, stats)
        return stats

    def _stats(self, model: str, now_ms: int, circuit: CircuitSettings) -> ModelStats:
        window = self._models.get(model)
        if window is None:
            return ModelStats(model=model)
        return compute_stats(model, window.finished, window.seconds, window.open_by_minute,
                             window.spend_total, now_ms, self.window_s, circuit)

    async def seen_models(self, now_ms: int) -> list[str]:
        return sorted(m for m, seen in self._seen_ms.items() if seen > now_ms - SEEN_HORIZON_MS)

    async def close(self) -> None:
        return None
