"""A ledger row: what one request decided and how it went, from a router's RequestSummary. No prompt text.

COLUMNS is the schema's one source: the migrations create it, the stores insert it, docs/ledger.md lists it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from routemesh.common.outcomes import FinishStatus
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2

# (column, type, what it holds). Types are portable names the stores map per dialect: text, bigint, double, json.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("decision_id", "text", "the decision's id (primary key: a report delivered twice is one row)"),
    ("ended_at_ms", "bigint", "Unix time the request ended, milliseconds"),
    ("tenant", "text", "tenant (from the API key when keys are on, else the request's metadata)"),
    ("project", "text", "project, likewise"),
    ("user_id", "text", "end user from the request's metadata"),
    ("api_key_id", "text", "the API key's id; empty without one"),
    ("route", "text", "route taken; empty when a model was pinned"),
    ("rule", "text", "the route's rule that matched; empty when none did"),
    ("strategy", "text", "the strategy that chose the model"),
    ("experiment", "text", "experiment; empty when none"),
    ("variant", "text", "experiment variant"),
    ("policy_version", "bigint", "policy version the decision was made with"),
    ("chosen_model", "text", "the plan's first model"),
    ("fallbacks", "json", "the plan's other models, in order"),
    ("candidates", "json", "every candidate: model, eligible, rank, score, estimated cost, factors, rejection"),
    ("features", "json", "the classifier's features (task, complexity, tokens, language, predicted success...)"),
    ("predicted_success", "double", "the quality predictor's success probability for the chosen model; null without"),
    ("estimated_cost_usd", "double", "estimated cost of the chosen model"),
    ("degraded", "json", "dependencies the decision went without"),
    ("prompt_sha256", "text", "SHA-256 of the conversation's roles and texts (never the text)"),
    ("serving_model", "text", "the model that answered; empty when none did"),
    ("status", "text", "how it ended: complete, length, failed, ... ('unspecified' when it failed before a token)"),
    ("attempts", "bigint", "attempts made (1 + failovers)"),
    ("input_tokens", "bigint", "input tokens of all attempts"),
    ("output_tokens", "bigint", "output tokens"),
    ("cached_tokens", "bigint", "input tokens served from a provider's prompt cache"),
    ("cost_usd", "double", "cost of all attempts, USD"),
    ("ttft_ms", "double", "time to first token, ms; 0 when none"),
    ("duration_ms", "double", "whole duration, ms"),
    ("trace_id", "text", "trace id (hex); empty when tracing is off"),
    ("error", "text", "the final error, for failed requests"),
)
NAMES = tuple(name for name, _, _ in COLUMNS)


def _json(value: Any) -> str:
    # orjson: about 5x faster than json here, and telemetry writes a few of these per request.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _features(f: common_pb2.Features) -> dict[str, Any]:
    """The classifier's features as JSON fields (by hand: json_format's MessageToDict costs 3x more)."""
    return {"input_tokens": f.input_tokens, "task_type": common_pb2.TaskType.Name(f.task_type),
            "task_confidence": f.task_confidence, "language": f.language, "complexity": f.complexity,
            "has_code": f.has_code, "signals": list(f.signals), "source": f.source,
            "predicted_success": dict(f.predicted_success), "quality_predictor_sha256": f.quality_predictor_sha256}


def _candidates(decision: router_pb2.Decision) -> list[dict[str, Any]]:
    return [{"model": c.model, "provider": c.provider, "eligible": c.eligible, "rank": c.rank, "score": c.score,
             "estimated_cost_usd": c.estimated_cost_usd, "factors": dict(c.factors),
             **({"rejected": c.rejection_reason} if c.rejection_reason else {})} for c in decision.candidates]


def row_from_summary(summary: telemetry_pb2.RequestSummary) -> tuple[Any, ...]:
    """The ledger row of one request summary, values in COLUMNS order."""
    decision, final = summary.decision, summary.final
    usage = final.usage
    features = _features(decision.features) if decision.HasField("features") else {}
    predicted = decision.features.predicted_success.get(decision.model) if decision.model else None
    return (
        summary.decision_id, summary.timestamp_ms, summary.tenant, summary.project, summary.user,
        summary.api_key_id, summary.route, decision.rule, decision.strategy, summary.experiment, summary.variant,
        decision.policy_version, decision.model, _json(list(decision.fallbacks)), _json(_candidates(decision)),
        _json(features), predicted, decision.estimated_cost_usd, _json(list(decision.degraded)),
        summary.prompt_sha256, summary.model, FinishStatus.label_of(summary.status), len(final.attempts),
        usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, summary.cost_usd, summary.ttft_ms,
        summary.duration_ms, decision.trace_id or final.trace_id, final.error,
    )


def texts_from_summaries(summaries: Sequence[telemetry_pb2.RequestSummary], now_ms: int) -> dict[str, tuple]:
    """The conversations to keep, by decision id: (decision id, JSON, stored at, expires at) in milliseconds."""
    return {s.decision_id: (s.decision_id, s.conversation_json, now_ms,
                            now_ms + max(s.text_retention_days, 1) * 86_400_000)
            for s in summaries if s.conversation_json and s.decision_id}
