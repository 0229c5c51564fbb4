"""What the console shows, from telemetry's messages: model and route tables, recent decisions, one Explain.

Plain functions over protobuf messages, returning JSON-ready dicts; no gRPC, no HTTP.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from routemesh.common.outcomes import REQUEST_ERROR_STATUSES, AttemptOutcome, CircuitState, FinishStatus
from routemesh.common.policy import Policy
from routemesh.common.stats import percentile
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2

PINNED = "(pinned)"


def circuit_label(state: int) -> str:
    # UNSPECIFIED: no breaker state known, which the router treats as closed.
    return "closed" if state == CircuitState.UNSPECIFIED else CircuitState.label_of(state)


def model_rows(snapshot: telemetry_pb2.GetSnapshotResponse, policy: Policy | None) -> list[dict[str, Any]]:
    """One row per model: the policy's models in its order, then any other model telemetry has seen."""
    health = {m.model: m for m in snapshot.models}
    names = [*(policy.models if policy else ()), *sorted(set(health) - set(policy.models if policy else ()))]
    rows = []
    for name in names:
        m = health.get(name, telemetry_pb2.ModelHealth(model=name))
        spec = policy.models.get(name) if policy else None
        rows.append({
            "model": name, "provider": spec.provider if spec else "", "samples": m.samples,
            "requests_per_minute": m.requests_per_minute, "in_flight": m.in_flight,
            "ttft_p50_ms": m.ttft_p50_ms, "ttft_p90_ms": m.ttft_p90_ms, "ttft_p99_ms": m.ttft_p99_ms,
            "error_rate": m.error_rate, "circuit": circuit_label(m.circuit_state),
            "circuit_open_until_ms": m.circuit_open_until_ms, "admit_fraction": m.admit_fraction,
            "spend_per_minute_usd": m.spend_per_minute_usd, "spend_total_usd": m.spend_total_usd,
            "stale": m.stale, "in_policy": spec is not None,
        })
    return rows


def _is_error(summary: telemetry_pb2.RequestSummary) -> bool:
    return summary.status in REQUEST_ERROR_STATUSES


def route_rows(summaries: Iterable[telemetry_pb2.RequestSummary]) -> list[dict[str, Any]]:
    """Per route (pinned models as "(pinned)"), over the recent summaries: requests, errors, spend, TTFT."""
    groups: dict[str, list[telemetry_pb2.RequestSummary]] = defaultdict(list)
    for s in summaries:
        groups[s.route or PINNED].append(s)
    rows = []
    for route, items in sorted(groups.items()):
        ttfts = sorted(s.ttft_ms for s in items if s.ttft_ms > 0)
        errors = sum(_is_error(s) for s in items)
        models: dict[str, int] = defaultdict(int)
        for s in items:
            models[s.model or "(none)"] += 1
        rows.append({
            "route": route, "requests": len(items), "errors": errors, "error_rate": errors / len(items),
            "spend_usd": sum(s.cost_usd for s in items), "ttft_p50_ms": percentile(ttfts, 0.5),
            "ttft_p90_ms": percentile(ttfts, 0.9), "last_ms": max(s.timestamp_ms for s in items),
            "models": dict(sorted(models.items(), key=lambda item: (-item[1], item[0]))),
        })
    return rows


def route_timeline(summaries: Iterable[telemetry_pb2.RequestSummary], now_ms: int, bucket_s: int = 30,
                   span_s: int = 600) -> dict[str, Any]:
    """Requests per route per bucket over the last `span_s` (from the recent summaries), oldest bucket first."""
    count = span_s // bucket_s
    start = now_ms - count * bucket_s * 1000
    series: dict[str, list[int]] = {}
    for s in summaries:
        at = (s.timestamp_ms - start) // (bucket_s * 1000)
        if 0 <= at < count:
            series.setdefault(s.route or PINNED, [0] * count)[at] += 1
    return {"start_ms": start, "bucket_s": bucket_s, "routes": dict(sorted(series.items()))}


def decision_row(s: telemetry_pb2.RequestSummary) -> dict[str, Any]:
    """A line of the recent decisions."""
    return {
        "decision_id": s.decision_id, "at_ms": s.timestamp_ms, "route": s.route or PINNED, "model": s.model,
        "chosen": s.decision.model, "strategy": s.decision.strategy, "status": FinishStatus.label_of(s.status),
        "error": _is_error(s), "ttft_ms": s.ttft_ms, "duration_ms": s.duration_ms, "cost_usd": s.cost_usd,
        "tenant": s.tenant, "attempts": len(s.final.attempts),
    }


def enum_label(enum: Any, value: int, prefix: str) -> str:
    """A proto enum value as a lowercase word; the number for a value this build does not know."""
    return enum.Name(value).removeprefix(prefix).lower() if value in enum.values() else str(value)


def task_label(task_type: int) -> str:
    return enum_label(common_pb2.TaskType, task_type, "TASK_TYPE_")


def _features(f: common_pb2.Features) -> dict[str, Any]:
    return {"task": task_label(f.task_type), "task_confidence": f.task_confidence, "complexity": f.complexity,
            "input_tokens": f.input_tokens, "language": f.language, "has_code": f.has_code,
            "signals": list(f.signals), "source": f.source,
            "predicted_success": dict(sorted(f.predicted_success.items(), key=lambda item: (-item[1], item[0]))),
            "quality_predictor_sha256": f.quality_predictor_sha256}


def _candidate(c: router_pb2.Candidate, chosen: str) -> dict[str, Any]:
    return {"model": c.model, "provider": c.provider, "eligible": c.eligible, "rank": c.rank, "score": c.score,
            "estimated_cost_usd": c.estimated_cost_usd, "rejection_reason": c.rejection_reason,
            "factors": {k: v for k, v in sorted(c.factors.items()) if k != "estimated_cost_usd"},
            "chosen": c.model == chosen}


def _attempt(a: common_pb2.Attempt) -> dict[str, Any]:
    return {"model": a.model, "provider": a.provider, "outcome": AttemptOutcome.label_of(a.outcome),
            "http_status": a.http_status, "error": a.error, "ttft_ms": a.ttft_ms, "duration_ms": a.duration_ms,
            "cost_usd": a.cost_usd, "hedge": a.hedge}


def explain(s: telemetry_pb2.RequestSummary) -> dict[str, Any]:
    """One decision as `routemesh explain` shows it (candidates, scores, why), with how the request went."""
    d = s.decision
    return {
        **decision_row(s),
        "project": s.project, "user": s.user, "experiment": s.experiment, "variant": s.variant,
        "decision": {
            "model": d.model, "provider": d.provider, "strategy": d.strategy, "reason": d.reason, "rule": d.rule,
            "route": d.route, "fallbacks": list(d.fallbacks), "policy_version": d.policy_version,
            "estimated_cost_usd": d.estimated_cost_usd, "budget_soft_limited": d.budget_soft_limited,
            "degraded": list(d.degraded), "trace_id": d.trace_id or s.final.trace_id,
            "features": _features(d.features), "candidates": [_candidate(c, d.model) for c in d.candidates],
        },
        "final": {"status": FinishStatus.label_of(s.final.status), "model": s.final.model,
                  "error": s.final.error, "input_tokens": s.final.usage.input_tokens,
                  "output_tokens": s.final.usage.output_tokens, "attempts": [_attempt(a) for a in s.final.attempts]},
    }


def find(summaries: Sequence[telemetry_pb2.RequestSummary], decision_id: str) -> telemetry_pb2.RequestSummary | None:
    return next((s for s in summaries if s.decision_id == decision_id), None)


def alert_row(a: telemetry_pb2.Alert) -> dict[str, Any]:
    return {"rule": a.rule, "kind": a.kind, "severity": a.severity, "subject": a.subject,
            "state": enum_label(telemetry_pb2.AlertState, a.state, "ALERT_STATE_"),
            "value": a.value, "threshold": a.threshold, "started_at_ms": a.started_at_ms,
            "resolved_at_ms": a.resolved_at_ms, "summary": a.summary, "fingerprint": a.fingerprint}
