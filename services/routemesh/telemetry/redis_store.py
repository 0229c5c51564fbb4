"""RedisHealthStore: model health shared by telemetry replicas, served stale while Redis is down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from routemesh.common.outcomes import ObservationPhase
from routemesh.common.policy_schema import CircuitSettings
from routemesh.common.redis_client import create_client
from routemesh.telemetry.experiments import (
    MAX_VARIANT_SAMPLES,
    ExperimentKeys,
    RequestSummaryRecord,
    VariantStatsRecord,
    queue_request_writes,
    read_experiment_report,
)
from routemesh.telemetry.store import (
    DEFAULT_CACHE_TTL_S,
    DEFAULT_CIRCUIT,
    DEFAULT_WINDOW_S,
    IN_FLIGHT_HORIZON_MIN,
    MAX_SAMPLES,
    RATE_WINDOW_S,
    SEEN_HORIZON_MS,
    FinishedSample,
    ModelStats,
    ObservationRecord,
    SecondTotals,
    SnapshotCache,
    StoreUnavailable,
    compute_stats,
    has_failures,
    unique,
)

log = logging.getLogger(__name__)

# Whole-operation bound: pool wait, connect and reply together stay under the ~0.5 s callers may wait.
OPERATION_TIMEOUT_S = 0.45
# After a failure, skip Redis for this long so a dead or frozen server costs each caller nothing.
FAILURE_BACKOFF_S = 1.0
WARNING_INTERVAL_S = 10.0
RATE_KEY_TTL_S = 3 * RATE_WINDOW_S
OPEN_KEY_TTL_S = (IN_FLIGHT_HORIZON_MIN + 1) * 60
LONG_KEY_TTL_S = 30 * 24 * 3600
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_SnapshotKey = tuple[tuple[str, ...], CircuitSettings]


class RedisKeys:
    """Every key the store writes, all under one prefix so replicas sharing it share state."""

    def __init__(self, prefix: str):
        self.base = f"{prefix}telemetry:"
        self.spend_total = f"{self.base}spend_total"
        self.models = f"{self.base}models"
        self.experiments = ExperimentKeys(self.base)

    def samples(self, model: str) -> str:
        return f"{self.base}samples:{model}"

    def rates(self, model: str, minute: int) -> str:
        return f"{self.base}rate:{model}:{minute}"

    def open(self, model: str, minute: int) -> str:
        return f"{self.base}open:{model}:{minute}"


def encode_sample(obs: ObservationRecord) -> str:
    """Compact list entry for one finished attempt: `timestamp_ms|outcome|ttft_ms|tpot_ms`."""
    return f"{obs.timestamp_ms}|{int(obs.outcome)}|{obs.ttft_ms:.3f}|{obs.tpot_ms:.3f}"


def decode_samples(entries: Sequence[str]) -> list[FinishedSample]:
    """Decode list entries, skipping any that do not parse (written by a newer or broken writer)."""
    out: list[FinishedSample] = []
    for entry in entries:
        try:
            ts, outcome, ttft, tpot = entry.split("|")
            out.append((int(ts), int(outcome), float(ttft), float(tpot)))
        except ValueError:
            continue
    return out


def decode_rates(hashes: Sequence[dict[str, str]]) -> dict[int, SecondTotals]:
    """Per-second totals from rate hashes whose fields are r<second>, t<second> and c<second>."""
    seconds: dict[int, SecondTotals] = defaultdict(SecondTotals)
    for fields in hashes:
        for name, value in fields.items():
            try:
                totals = seconds[int(name[1:])]
                if name[0] == "r":
                    totals.requests += int(value)
                elif name[0] == "t":
                    totals.tokens += int(value)
                elif name[0] == "c":
                    totals.spend += float(value)
            except (ValueError, IndexError):
                continue
    return seconds


class RedisHealthStore:
    """HealthStore in Redis: capped sample lists, per-minute count hashes, in-flight counters; all expire."""

    def __init__(
        self,
        url: str,
        prefix: str = "routemesh:",
        window_s: int = DEFAULT_WINDOW_S,
        *,
        max_samples: int = MAX_SAMPLES,
        max_variant_samples: int = MAX_VARIANT_SAMPLES,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        failure_backoff_s: float = FAILURE_BACKOFF_S,
        max_connections: int = 16,
    ):
        self.window_s = window_s
        self.keys = RedisKeys(prefix)
        self.dropped = 0
        self.stale_snapshots = 0
        self._redis = create_client(url, max_connections)
        self._max_samples = max_samples
        self._max_variant_samples = max_variant_samples
        self._failure_backoff_s = failure_backoff_s
        self._cache = SnapshotCache(cache_ttl_s)
        self._last: dict[str, ModelStats] = {}
        self._pending: dict[_SnapshotKey, tuple[int, asyncio.Task[dict[str, ModelStats]]]] = {}
        self._skip_until = 0.0
        self._next_warning = 0.0
        self._unreported_drops = 0

    async def record(self, observations: Sequence[ObservationRecord]) -> None:
        if not observations:
            return
        if time.monotonic() < self._skip_until:
            self._drop(len(observations), "Redis failed recently")
            return
        pipe = self._redis.pipeline(transaction=False)
        self._queue_writes(pipe, observations)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            self._failed()
            self._drop(len(observations), _describe(exc))
            return
        if has_failures(observations):
            # Reads already under way saw Redis before these writes: new readers must not join them.
            self._cache.invalidate()
            self._pending.clear()

    async def record_requests(self, requests: Sequence[RequestSummaryRecord]) -> None:
        # Only summaries of experiments are kept, so only those count as dropped.
        kept = [summary for summary in requests if summary.experiment]
        if not kept:
            return
        if time.monotonic() < self._skip_until:
            self._drop(len(kept), "Redis failed recently")
            return
        pipe = self._redis.pipeline(transaction=False)
        queue_request_writes(pipe, self.keys.experiments, kept,
                             max_samples=self._max_variant_samples, window_s=self.window_s)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            self._failed()
            self._drop(len(kept), _describe(exc))

    async def experiment_report(self, experiment: str | None, now_ms: int) -> list[VariantStatsRecord]:
        if time.monotonic() < self._skip_until:
            raise StoreUnavailable("Redis failed moments ago")
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                return await read_experiment_report(self._redis, self.keys.experiments, experiment, now_ms,
                                                    max_samples=self._max_variant_samples,
                                                    window_s=self.window_s)
        except _REDIS_ERRORS as exc:
            self._failed()
            raise StoreUnavailable(f"Redis unavailable ({_describe(exc)})") from exc

    def _queue_writes(self, pipe: Pipeline, observations: Sequence[ObservationRecord]) -> None:
        """One round trip per batch: increments are summed here so each key gets one command."""
        samples: dict[str, list[str]] = defaultdict(list)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        spends: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        open_deltas: Counter[str] = Counter()
        spend_totals: defaultdict[str, float] = defaultdict(float)
        seen: dict[str, int] = {}
        for obs in observations:
            model, ts = obs.model, obs.timestamp_ms
            second, minute = ts // 1000, ts // 60_000
            rate_key = self.keys.rates(model, minute)
            seen[model] = max(seen.get(model, 0), ts)
            if obs.phase == ObservationPhase.STARTED:
                open_deltas[self.keys.open(model, minute)] += 1
                counts[rate_key][f"r{second}"] += 1
                continue
            open_deltas[self.keys.open(model, minute)] -= 1
            samples[model].append(encode_sample(obs))
            if obs.input_tokens or obs.output_tokens:
                counts[rate_key][f"t{second}"] += obs.input_tokens + obs.output_tokens
            if obs.cost_usd:
                spends[rate_key][f"c{second}"] += obs.cost_usd
                spend_totals[model] += obs.cost_usd
        for model, entries in samples.items():
            key = self.keys.samples(model)
            pipe.lpush(key, *entries)
            pipe.ltrim(key, 0, self._max_samples - 1)
            pipe.expire(key, self.window_s + 60)
        for key in counts.keys() | spends.keys():
            for field, n in counts[key].items():
                pipe.hincrby(key, field, n)
            for field, usd in spends[key].items():
                pipe.hincrbyfloat(key, field, usd)
            pipe.expire(key, RATE_KEY_TTL_S)
        for key, delta in open_deltas.items():
            pipe.incrby(key, delta)
            pipe.expire(key, OPEN_KEY_TTL_S)
        for model, usd in spend_totals.items():
            pipe.hincrbyfloat(self.keys.spend_total, model, usd)
        if spend_totals:
            pipe.expire(self.keys.spend_total, LONG_KEY_TTL_S)
        newest = max(seen.values())
        pipe.zadd(self.keys.models, seen, gt=True)
        pipe.zremrangebyscore(self.keys.models, "-inf", newest - SEEN_HORIZON_MS)
        pipe.expire(self.keys.models, LONG_KEY_TTL_S)

    async def snapshot(self, models: Sequence[str], now_ms: int,
                       circuit: CircuitSettings | None = None) -> dict[str, ModelStats]:
        key = (unique(models), circuit or DEFAULT_CIRCUIT)
        cached = self._cache.get(key, now_ms)
        if cached is not None:
            return cached
        pending = self._pending.get(key)
        # Readers arriving while the same snapshot is being read share that read instead of queueing more.
        if pending is None or abs(pending[0] - now_ms) > self._cache.ttl_s * 1000 or pending[1].done():
            task = asyncio.create_task(self._compute(key, now_ms))
            self._pending[key] = (now_ms, task)
            task.add_done_callback(lambda done: self._forget_pending(key, done))
        else:
            task = pending[1]
        # Shielded: one caller giving up must not cancel the read the others are waiting for.
        return dict(await asyncio.shield(task))

    def _forget_pending(self, key: _SnapshotKey, task: asyncio.Task[dict[str, ModelStats]]) -> None:
        pending = self._pending.get(key)
        if pending is not None and pending[1] is task:
            del self._pending[key]

    async def _compute(self, key: _SnapshotKey, now_ms: int) -> dict[str, ModelStats]:
        names, circuit = key
        if time.monotonic() < self._skip_until:
            return self._stale(names)
        generation = self._cache.generation
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                stats = await self._read(names, now_ms, circuit)
        except _REDIS_ERRORS as exc:
            self._failed()
            self._warn(f"telemetry snapshot served stale: Redis unavailable ({_describe(exc)})")
            return self._stale(names)
        self._last.update(stats)
        self._cache.put(key, now_ms, stats, generation)
        return stats

    async def _read(self, names: tuple[str, ...], now_ms: int, circuit: CircuitSettings) -> dict[str, ModelStats]:
        if not names:
            return {}
        now_s, now_min = now_ms // 1000, now_ms // 60_000
        rate_minutes = sorted({(now_s - RATE_WINDOW_S + 1) // 60, now_min})
        open_minutes = range(now_min - IN_FLIGHT_HORIZON_MIN + 1, now_min + 1)
        pipe = self._redis.pipeline(transaction=False)
        for model in names:
            pipe.lrange(self.keys.samples(model), 0, self._max_samples - 1)
            for minute in rate_minutes:
                pipe.hgetall(self.keys.rates(model, minute))
            pipe.mget([self.keys.open(model, minute) for minute in open_minutes])
        pipe.hmget(self.keys.spend_total, list(names))
        replies = await pipe.execute()
        spend_totals = replies.pop()
        per_model = 2 + len(rate_minutes)
        stats: dict[str, ModelStats] = {}
        for i, model in enumerate(names):
            entries, *rate_hashes, opens = replies[i * per_model:(i + 1) * per_model]
            open_by_minute = {m: int(n) for m, n in zip(open_minutes, opens, strict=True) if n is not None}
            stats[model] = compute_stats(
                model,
                decode_samples(entries[::-1]),  # LPUSH keeps the newest first; the breaker replays oldest first
                decode_rates(rate_hashes),
                open_by_minute,
                float(spend_totals[i] or 0.0),
                now_ms,
                self.window_s,
                circuit,
            )
        return stats

    async def seen_models(self, now_ms: int) -> list[str]:
        if time.monotonic() >= self._skip_until:
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    seen = await self._redis.zrangebyscore(self.keys.models, now_ms - SEEN_HORIZON_MS, "+inf")
                return sorted(seen)
            except _REDIS_ERRORS as exc:
                self._failed()
                self._warn(f"telemetry model list served stale: Redis unavailable ({_describe(exc)})")
        return sorted(self._last)

    async def close(self) -> None:
        for _, task in list(self._pending.values()):
            task.cancel()
        await self._redis.aclose()

    def _stale(self, names: tuple[str, ...]) -> dict[str, ModelStats]:
        self.stale_snapshots += 1
        return {name: _as_stale(self._last.get(name), name) for name in names}

    def _failed(self) -> None:
        self._skip_until = time.monotonic() + self._failure_backoff_s

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self._unreported_drops += count
        self._warn(f"telemetry dropped {self._unreported_drops} observation(s) or request summaries: {why}")

    def _warn(self, message: str) -> None:
        """Log at most one warning per interval: an outage must not flood the log."""
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARNING_INTERVAL_S
            self._unreported_drops = 0
            log.warning("%s (dropped %d in total so far)", message, self.dropped)


def _as_stale(stats: ModelStats | None, model: str) -> ModelStats:
    return ModelStats(model=model, stale=True) if stats is None else replace(stats, stale=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
