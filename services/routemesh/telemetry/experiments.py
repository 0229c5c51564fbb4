"""Experiment variants from routers' request summaries: records, shared math, and each store's half."""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from routemesh.common.stats import percentile

from routemesh.common.outcomes import REQUEST_ERROR_STATUSES, FinishStatus

# Latency percentiles of a variant cover at most its newest this many served requests; counts stay exact.
MAX_VARIANT_SAMPLES = 2000

# The same errors a key's usage counts (common.outcomes).
ERROR_STATUSES = REQUEST_ERROR_STATUSES
# Only answers that ran their course say anything about latency (a tool call and a continued answer did);
# errors and cancellations are cut short.
SERVED_STATUSES = frozenset({FinishStatus.COMPLETE, FinishStatus.LENGTH, FinishStatus.CONTENT_FILTER,
                             FinishStatus.CONTINUED, FinishStatus.TOOL_CALLS})


def is_request_error(status: int) -> bool:
    return status in ERROR_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSummaryRecord:
    """What a router saw of one whole chat request, as the store keeps it."""

    experiment: str
    variant: str
    timestamp_ms: int
    decision_id: str = ""
    route: str = ""
    model: str = ""
    status: FinishStatus | int = FinishStatus.COMPLETE  # a plain int when a newer router sent it
    ttft_ms: float = 0.0
    duration_ms: float = 0.0
    cost_usd: float = 0.0
    tenant: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantStatsRecord:
    """What one experiment variant did in the window; `models` counts requests per serving model."""

    experiment: str
    variant: str
    requests: int = 0
    errors: int = 0
    ttft_p50_ms: float = 0.0
    ttft_p95_ms: float = 0.0
    duration_p50_ms: float = 0.0
    duration_p95_ms: float = 0.0
    cost_usd: float = 0.0
    models: dict[str, int] = field(default_factory=dict)


# One served request as a variant's window keeps it: (timestamp_ms, ttft_ms, duration_ms).
LatencySample = tuple[int, float, float]


@dataclass(slots=True)
class VariantSecond:
    """Requests, errors, USD and serving models of one variant within one second."""

    requests: int = 0
    errors: int = 0
    cost: float = 0.0
    models: Counter[str] = field(default_factory=Counter)


def compute_variant_stats(
    experiment: str,
    variant: str,
    samples: Iterable[LatencySample],
    seconds: Mapping[int, VariantSecond],
    now_ms: int,
    window_s: int,
) -> VariantStatsRecord:
    """VariantStatsRecord as of now_ms; whole seconds decide membership so samples and counts agree."""
    now_s = now_ms // 1000
    oldest_s = now_s - window_s
    ttfts: list[float] = []
    durations: list[float] = []
    for ts, ttft, duration in samples:
        if oldest_s < ts // 1000 <= now_s:
            durations.append(duration)
            if ttft > 0:
                ttfts.append(ttft)
    ttfts.sort()
    durations.sort()
    requests = errors = 0
    cost = 0.0
    models: Counter[str] = Counter()
    for second, totals in seconds.items():
        if oldest_s < second <= now_s:
            requests += totals.requests
            errors += totals.errors
            cost += totals.cost
            models.update(totals.models)
    return VariantStatsRecord(
        experiment=experiment,
        variant=variant,
        requests=requests,
        errors=errors,
        ttft_p50_ms=percentile(ttfts, 0.50),
        ttft_p95_ms=percentile(ttfts, 0.95),
        duration_p50_ms=percentile(durations, 0.50),
        duration_p95_ms=percentile(durations, 0.95),
        cost_usd=cost,
        models=dict(sorted(models.items())),
    )


def matches(experiment_filter: str | None, experiment: str) -> bool:
    return not experiment_filter or experiment_filter == experiment


class _VariantWindow:
    """Everything the in-memory store keeps about one variant."""

    def __init__(self, max_samples: int):
        self.samples: deque[LatencySample] = deque(maxlen=max_samples)
        self.seconds: dict[int, VariantSecond] = {}
        self.newest_ms = 0

    def add(self, summary: RequestSummaryRecord) -> None:
        ts = summary.timestamp_ms
        self.newest_ms = max(self.newest_ms, ts)
        totals = self.seconds.setdefault(ts // 1000, VariantSecond())
        totals.requests += 1
        totals.errors += is_request_error(summary.status)
        totals.cost += summary.cost_usd
        if summary.model:
            totals.models[summary.model] += 1
        if summary.status in SERVED_STATUSES:
            self.samples.append((ts, summary.ttft_ms, summary.duration_ms))

    def prune(self, window_s: int) -> None:
        """Drop seconds past the window, so memory stays bounded however long the process runs."""
        if len(self.seconds) > 2 * window_s + 60:
            oldest = self.newest_ms // 1000 - window_s - 60
            self.seconds = {s: t for s, t in self.seconds.items() if s > oldest}


class MemoryExperiments:
    """The in-memory store's experiment windows, one per (experiment, variant)."""

    def __init__(self, window_s: int, max_samples: int = MAX_VARIANT_SAMPLES):
        self.window_s = window_s
        self._max_samples = max_samples
        self._variants: dict[tuple[str, str], _VariantWindow] = {}

    def record(self, summaries: Sequence[RequestSummaryRecord]) -> None:
        touched: set[tuple[str, str]] = set()
        for summary in summaries:
            if not summary.experiment:
                continue
            key = (summary.experiment, summary.variant)
            window = self._variants.get(key)
            if window is None:
                window = self._variants[key] = _VariantWindow(self._max_samples)
            window.add(summary)
            touched.add(key)
        if not touched:
            return
        for key in touched:
            self._variants[key].prune(self.window_s)
        # Variants silent for two windows are over; forgetting them keeps finished experiments from piling up.
        newest = max(w.newest_ms for w in self._variants.values())
        horizon = newest - 2 * self.window_s * 1000
        self._variants = {k: w for k, w in self._variants.items() if w.newest_ms > horizon}

    def report(self, experiment: str | None, now_ms: int) -> list[VariantStatsRecord]:
        rows = [
            compute_variant_stats(name, variant, window.samples, window.seconds, now_ms, self.window_s)
            for (name, variant), window in sorted(self._variants.items())
            if matches(experiment, name)
        ]
        return [row for row in rows if row.requests]


def _quoted(name: str) -> str:
    # Names may hold ':' (the key separator); quoting keeps ("a:b", "c") and ("a", "b:c") apart.
    return quote(name, safe="")


class ExperimentKeys:
    """Redis keys of experiment variants: an index of variants, a sample list and per-minute counts each."""

    def __init__(self, base: str):
        self.base = base
        self.index = f"{base}experiments"

    @staticmethod
    def member(experiment: str, variant: str) -> str:
        return f"{_quoted(experiment)}:{_quoted(variant)}"

    @staticmethod
    def parse_member(member: str) -> tuple[str, str] | None:
        experiment, sep, variant = member.partition(":")
        return (unquote(experiment), unquote(variant)) if sep else None

    def samples(self, member: str) -> str:
        return f"{self.base}exp_samples:{member}"

    def counts(self, member: str, minute: int) -> str:
        return f"{self.base}exp_counts:{member}:{minute}"


def queue_request_writes(
    pipe: Any,
    keys: ExperimentKeys,
    summaries: Sequence[RequestSummaryRecord],
    *,
    max_samples: int,
    window_s: int,
) -> None:
    """Queue one batch's writes on a Redis pipeline, increments summed so each key gets one command."""
    samples: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    costs: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    newest: dict[str, int] = {}
    for summary in summaries:
        if not summary.experiment:
            continue
        ts = summary.timestamp_ms
        second = ts // 1000
        member = keys.member(summary.experiment, summary.variant)
        newest[member] = max(newest.get(member, 0), ts)
        key = keys.counts(member, ts // 60_000)
        counts[key][f"r{second}"] += 1
        if is_request_error(summary.status):
            counts[key][f"e{second}"] += 1
        if summary.model:
            counts[key][f"m{second}:{summary.model}"] += 1
        if summary.cost_usd:
            costs[key][f"c{second}"] += summary.cost_usd
        if summary.status in SERVED_STATUSES:
            samples[member].append(f"{ts}|{summary.ttft_ms:.3f}|{summary.duration_ms:.3f}")
    if not newest:
        return
    for member, entries in samples.items():
        key = keys.samples(member)
        pipe.lpush(key, *entries)
        pipe.ltrim(key, 0, max_samples - 1)
        pipe.expire(key, window_s + 60)
    for key in counts.keys() | costs.keys():
        for name, n in counts[key].items():
            pipe.hincrby(key, name, n)
        for name, usd in costs[key].items():
            pipe.hincrbyfloat(key, name, usd)
        pipe.expire(key, window_s + 120)
    pipe.zadd(keys.index, newest, gt=True)
    pipe.zremrangebyscore(keys.index, "-inf", max(newest.values()) - 2 * window_s * 1000)
    pipe.expire(keys.index, 2 * window_s + 60)


def decode_latency(entries: Sequence[str]) -> list[LatencySample]:
    """Decode `timestamp_ms|ttft_ms|duration_ms` entries, skipping any that do not parse."""
    out: list[LatencySample] = []
    for entry in entries:
        try:
            ts, ttft, duration = entry.split("|")
            out.append((int(ts), float(ttft), float(duration)))
        except ValueError:
            continue
    return out


def decode_counts(hashes: Sequence[dict[str, str]]) -> dict[int, VariantSecond]:
    """Per-second totals from count hashes whose fields are r<s>, e<s>, c<s> and m<s>:<model>."""
    seconds: dict[int, VariantSecond] = defaultdict(VariantSecond)
    for fields in hashes:
        for name, value in fields.items():
            try:
                kind, rest = name[0], name[1:]
                if kind == "m":
                    second, _, model = rest.partition(":")
                    seconds[int(second)].models[model] += int(value)
                    continue
                totals = seconds[int(rest)]
                if kind == "r":
                    totals.requests += int(value)
                elif kind == "e":
                    totals.errors += int(value)
                elif kind == "c":
                    totals.cost += float(value)
            except (ValueError, IndexError):
                continue
    return seconds


async def read_experiment_report(
    redis: Any, keys: ExperimentKeys, experiment: str | None, now_ms: int, *, max_samples: int, window_s: int
) -> list[VariantStatsRecord]:
    """Two round trips: the variants active in the window, then their samples and per-minute counts."""
    now_s = now_ms // 1000
    first_s = now_s - window_s + 1
    members = await redis.zrangebyscore(keys.index, first_s * 1000, "+inf")
    variants = sorted(
        (parsed, member)
        for member in members
        if (parsed := keys.parse_member(member)) is not None and matches(experiment, parsed[0])
    )
    if not variants:
        return []
    minutes = range(first_s // 60, now_s // 60 + 1)
    pipe = redis.pipeline(transaction=False)
    for _, member in variants:
        pipe.lrange(keys.samples(member), 0, max_samples - 1)
        for minute in minutes:
            pipe.hgetall(keys.counts(member, minute))
    replies = await pipe.execute()
    per_variant = 1 + len(minutes)
    rows = []
    for i, ((name, variant), _) in enumerate(variants):
        entries, *count_hashes = replies[i * per_variant:(i + 1) * per_variant]
        row = compute_variant_stats(name, variant, decode_latency(entries), decode_counts(count_hashes),
                                    now_ms, window_s)
        if row.requests:
            rows.append(row)
    return rows
