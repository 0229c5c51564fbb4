"""Runs a plan: tries candidates in order until one commits (sends its first token), then streams it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.errors import InvalidRequest, NotReady, UpstreamUnavailable
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.tracing import capture_content, inject_headers, set_attributes, tracer
from routemesh.executor.openai_adapter import ProviderError, ProviderTarget, stream_chat

# finish_reason from the provider -> our finish status
_FINISH = {"stop": "complete", "length": "length", "content_filter": "content_filter",
           "tool_calls": "complete", "function_call": "complete"}


@dataclass
class AttemptRecord:
    """What happened in one attempt of one candidate."""

    model: str
    provider: str
    outcome: str = ""  # success, rate_limited, upstream_error, connect_error, timeout, truncated, cancelled, config_error
    http_status: int = 0
    error: str = ""
    ttft_ms: float = 0.0
    duration_ms: float = 0.0
    tpot_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    finish: str = ""  # complete, length, content_filter (successful attempts only)


@dataclass
class ExecutionOutcome:
    """The summary of an execution; the last item an execution yields."""

    status: str  # complete, length, content_filter, truncated_upstream, failed, cancelled
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    attempts: list[AttemptRecord] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class ExecutionInput:
    """A chat and its plan, as the router sends it."""

    messages: list[dict[str, str]]
    plan: list[str]
    max_tokens: int
    temperature: float | None = None
    decision_id: str = ""
    estimated_input_tokens: int = 0


Observer = Callable[[AttemptRecord, bool, str], None]  # (record, finished, decision_id)


class ExecutionEngine:
    """Resolves plan entries against the executor's own policy copy (never trusts URLs from callers)."""

    def __init__(self, holder: PolicyHolder, client: httpx.AsyncClient, observe: Observer,
                 environ: Mapping[str, str] | None = None):
        self.holder = holder
        self.client = client
        self.observe = observe
        self.environ = os.environ if environ is None else environ

    def resolve(self, name: str) -> tuple[ProviderTarget | None, AttemptRecord]:
        """The provider target for a model name, or None with a config_error record."""
        current = self.holder.current
        assert current is not None
        model = current.policy.models.get(name)
        if model is None:
            return None, AttemptRecord(model=name, provider="", outcome="config_error",
                                       error=f"model {name!r} is not in policy version {current.version}")
        provider = current.policy.providers[model.provider]
        record = AttemptRecord(model=name, provider=model.provider)
        key = None
        if provider.api_key_env:
            key = self.environ.get(provider.api_key_env)
            if not key:
                record.outcome = "config_error"
                record.error = f"environment variable {provider.api_key_env} (API key of {model.provider}) is not set"
                return None, record
        return ProviderTarget(
            provider=model.provider, model=name, upstream_model=model.upstream_model, base_url=provider.base_url,
            api_key=key, connect_timeout_s=provider.timeouts.connect_s,
            first_token_timeout_s=provider.timeouts.first_token_s,
            between_tokens_timeout_s=provider.timeouts.between_tokens_s,
        ), record

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        current = self.holder.current
        spec = current.policy.models.get(model) if current else None
        return spec.estimated_cost(input_tokens, output_tokens) if spec else 0.0

    async def execute(self, request: ExecutionInput, deadline: float | None) -> AsyncIterator[str | ExecutionOutcome]:
        """Yield answer text pieces, then one ExecutionOutcome; raise UpstreamUnavailable if nothing commits."""
        if self.holder.current is None:
            raise NotReady("executor has no policy yet")
        if not request.plan:
            raise InvalidRequest("plan must name at least one model", field_violations=[("plan", "empty")])
        attempts: list[AttemptRecord] = []
        for index, name in enumerate(request.plan):
            target, record = self.resolve(name)
            attempts.append(record)
            if target is None:
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                record.outcome, record.error = "timeout", "caller deadline passed before this attempt"
                break
            committed = False
            async for item in self._attempt(request, target, record, index, remaining):
                committed = True
                yield item
            if committed:
                yield self._outcome(record, attempts)
                return
        summary = "; ".join(
            f"{a.model}: {a.outcome}" + (f" {a.http_status}" if a.http_status else "") + (f" ({a.error})" if a.error else "")
            for a in attempts
        )
        raise UpstreamUnavailable(
            f"all {len(attempts)} candidate(s) failed before the first token: {summary}",
            metadata={f"attempt.{i + 1}": f"{a.model}:{a.outcome}" for i, a in enumerate(attempts)},
        )

    def _outcome(self, record: AttemptRecord, attempts: list[AttemptRecord]) -> ExecutionOutcome:
        if record.outcome == "success":
            status = record.finish
        else:
            status = {"truncated": "truncated_upstream", "timeout": "truncated_upstream",
                      "cancelled": "cancelled"}.get(record.outcome, "failed")
        return ExecutionOutcome(
            status=status, model=record.model, provider=record.provider, input_tokens=record.input_tokens,
            output_tokens=record.output_tokens, usage_estimated=record.usage_estimated,
            cost_usd=round(sum(a.cost_usd for a in attempts), 10), attempts=attempts,
            error=record.error,
        )

    async def _attempt(self, request: ExecutionInput, target: ProviderTarget, record: AttemptRecord, index: int,
                       remaining: float | None) -> AsyncIterator[str]:
        """Stream one candidate; yields text only after it commits. Fills `record` in place."""
        url = urlsplit(target.base_url)
        span = tracer().start_span(
            f"{semconv.SPAN_CHAT_PREFIX} {target.model}", kind=SpanKind.CLIENT,
            attributes={
                semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: target.provider,
                semconv.GEN_AI_REQUEST_MODEL: target.upstream_model,
                semconv.GEN_AI_REQUEST_MAX_TOKENS: request.max_tokens,
                semconv.SERVER_ADDRESS: url.hostname or "", semconv.SERVER_PORT: url.port or 0,
                semconv.ATTEMPT_INDEX: index, semconv.DECISION_ID: request.decision_id,
            },
        )
        if request.temperature is not None:
            span.set_attribute(semconv.GEN_AI_REQUEST_TEMPERATURE, request.temperature)
        if capture_content():
            span.set_attribute(semconv.GEN_AI_INPUT_MESSAGES, json.dumps(request.messages))
        headers: dict[str, str] = {}
        inject_headers(headers, span)
        self.observe(record, False, request.decision_id)
        start = time.monotonic()
        first_at = last_at = 0.0
        chunks = 0
        finish = ""
        usage: tuple[int, int] | None = None
        text: list[str] = []
        try:
            async for event in stream_chat(
                self.client, target, request.messages, max_tokens=request.max_tokens,
                temperature=request.temperature, headers=headers, total_timeout_s=remaining,
            ):
                if event.kind == "delta":
                    last_at = time.monotonic()
                    if not chunks:
                        first_at = last_at
                    chunks += 1
                    if capture_content():
                        text.append(event.text)
                    yield event.text
                elif event.kind == "usage":
                    usage = (event.input_tokens, event.output_tokens)
                elif event.kind == "finish":
                    finish = event.finish_reason
            record.outcome = "success"
            record.finish = _FINISH.get(finish, "complete")
        except ProviderError as exc:
            record.outcome, record.http_status, record.error = exc.outcome, exc.http_status, exc.message
            if exc.committed and exc.outcome not in ("truncated", "timeout"):
                record.outcome = "truncated"
        except (asyncio.CancelledError, GeneratorExit):
            record.outcome, record.error = "cancelled", "caller cancelled"
            raise
        finally:
            now = time.monotonic()
            record.duration_ms = round((now - start) * 1000, 3)
            if chunks:
                record.ttft_ms = round((first_at - start) * 1000, 3)
                if chunks > 1:
                    record.tpot_ms = round((last_at - first_at) * 1000 / (chunks - 1), 4)
            if usage:
                record.input_tokens, record.output_tokens = usage
            elif chunks or record.outcome in ("success", "truncated", "cancelled"):
                # No usage from the provider: estimate (one token per streamed chunk).
                record.input_tokens, record.output_tokens = request.estimated_input_tokens, chunks
                record.usage_estimated = True
            record.cost_usd = self._cost(target.model, record.input_tokens, record.output_tokens)
            self._finish_span(span, record, finish, text)
            self.observe(record, True, request.decision_id)

    @staticmethod
    def _finish_span(span, record: AttemptRecord, finish: str, text: list[str]) -> None:
        set_attributes(span, {
            semconv.GEN_AI_USAGE_INPUT_TOKENS: record.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: record.output_tokens,
            semconv.GEN_AI_RESPONSE_MODEL: None,
            semconv.GEN_AI_RESPONSE_FINISH_REASONS: (finish,) if finish else None,
            semconv.ATTEMPT_OUTCOME: record.outcome, semconv.TTFT_MS: record.ttft_ms or None,
            semconv.COST_USD: record.cost_usd, semconv.HTTP_RESPONSE_STATUS_CODE: record.http_status or None,
        })
        if text:
            span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": "".join(text)}]))
        if record.outcome not in ("success", "cancelled"):
            span.set_attribute(semconv.ERROR_TYPE, record.outcome)
            span.set_status(Status(StatusCode.ERROR, record.error[:200]))
        span.end()
