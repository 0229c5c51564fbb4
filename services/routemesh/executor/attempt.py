"""One attempt of one candidate, run as a task that pushes its events to the engine's queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.outcomes import AttemptOutcome, FinishStatus
from routemesh.common.tracing import capture_content, inject_headers, set_attributes, tracer
from routemesh.executor.http import HttpClient
from routemesh.executor.openai_adapter import ProviderError, ProviderTarget
from routemesh.executor.providers import stream_for

# finish_reason from the provider (the OpenAI vocabulary every adapter speaks) -> our finish status
FINISH = {"stop": FinishStatus.COMPLETE, "length": FinishStatus.LENGTH,
          "content_filter": FinishStatus.CONTENT_FILTER, "tool_calls": FinishStatus.TOOL_CALLS,
          "function_call": FinishStatus.TOOL_CALLS}
# Endings that may be billed even when the provider sent no usage: theirs is estimated.
MAY_BE_BILLED = frozenset({AttemptOutcome.SUCCESS, AttemptOutcome.TRUNCATED, AttemptOutcome.CANCELLED,
                           AttemptOutcome.HEDGE_LOST})
# Endings that say nothing bad about the provider: their spans are not errors.
NOT_ERRORS = frozenset({AttemptOutcome.SUCCESS, AttemptOutcome.CANCELLED, AttemptOutcome.HEDGE_LOST})
# Endings of a stream cut after its first token; any other failure by then becomes TRUNCATED.
CUT_SHORT = frozenset({AttemptOutcome.TRUNCATED, AttemptOutcome.TIMEOUT})


@dataclass
class AttemptRecord:
    """What happened in one attempt of one candidate."""

    model: str
    provider: str
    outcome: AttemptOutcome = AttemptOutcome.UNSPECIFIED  # UNSPECIFIED while the attempt runs
    http_status: int = 0
    error: str = ""
    ttft_ms: float = 0.0
    duration_ms: float = 0.0
    tpot_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    finish: FinishStatus = FinishStatus.UNSPECIFIED  # successful attempts only
    hedge: bool = False
    try_number: int = 1
    retry_after_s: float | None = None
    reason: str = ""  # typed provider error: rate_limit, context_length, content_policy, auth, ...
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def outcome_label(self) -> str:
        """The outcome as spans and error messages show it; empty while the attempt runs."""
        return self.outcome.label if self.outcome else ""


@dataclass(frozen=True, slots=True)
class ToolPiece:
    """A piece of a streamed tool call: the first piece of a call carries its id and name."""

    index: int
    id: str = ""
    name: str = ""
    arguments_fragment: str = ""


@dataclass(frozen=True)
class AttemptEvent:
    """From a runner to the engine: a text or tool-call piece, or the end of the attempt (record final then)."""

    runner: AttemptRunner
    text: str = ""
    tool: ToolPiece | None = None
    done: bool = False

    @property
    def piece(self) -> str | ToolPiece:
        return self.tool if self.tool is not None else self.text


class AttemptRunner:
    """Streams one candidate into `queue`; the engine reads the queue and cancels runners it does not need."""

    def __init__(self, *, client: HttpClient, target: ProviderTarget, record: AttemptRecord,
                 messages: list[dict], max_tokens: int, temperature: float | None,
                 deadline: float | None, queue: asyncio.Queue[AttemptEvent], index: int, decision_id: str,
                 estimated_input_tokens: int, cost: Callable[[str, int, int], float],
                 observe: Callable[[AttemptRecord, bool, str], None], tools: list[dict] | None = None,
                 tool_choice: str = "", response_format: str = ""):
        self.tools = tools
        self.tool_choice = tool_choice
        self.response_format = response_format
        self.client = client
        self.target = target
        self.record = record
        self.messages = messages
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.deadline = deadline
        self.queue = queue
        self.index = index
        self.decision_id = decision_id
        self.estimated_input_tokens = estimated_input_tokens
        self.cost = cost
        self.observe = observe
        self.chunks = 0
        self.text: list[str] = []
        self.tool_pieces = 0
        self.task: asyncio.Task[None] | None = None
        self.lost_reason: AttemptOutcome | None = None

    def start(self) -> None:
        # The task runs in a copy of the current context, so its span is a child of the Execute span.
        self.task = asyncio.create_task(self._run())

    def cancel(self, outcome: AttemptOutcome, reason: str) -> None:
        """Stop the attempt; its record says why (HEDGE_LOST, CANCELLED)."""
        if self.task and not self.task.done():
            self.record.outcome, self.record.error = outcome, reason
            self.lost_reason = outcome
            self.task.cancel()

    async def wait(self) -> None:
        if self.task:
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        record, target = self.record, self.target
        url = urlsplit(target.base_url)
        span = tracer().start_span(
            f"{semconv.SPAN_CHAT_PREFIX} {target.model}", kind=SpanKind.CLIENT,
            attributes={
                semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: target.provider,
                semconv.GEN_AI_REQUEST_MODEL: target.upstream_model,
                semconv.GEN_AI_REQUEST_MAX_TOKENS: self.max_tokens,
                semconv.SERVER_ADDRESS: url.hostname or "", semconv.SERVER_PORT: url.port or 0,
                semconv.ATTEMPT_INDEX: self.index, semconv.DECISION_ID: self.decision_id,
            },
        )
        if self.temperature is not None:
            span.set_attribute(semconv.GEN_AI_REQUEST_TEMPERATURE, self.temperature)
        if capture_content():
            span.set_attribute(semconv.GEN_AI_INPUT_MESSAGES, json.dumps(self.messages))
        headers: dict[str, str] = {}
        inject_headers(headers, span)
        self.observe(record, False, self.decision_id)
        start = time.monotonic()
        first_at = last_at = 0.0
        finish = ""
        usage: tuple[int, int] | None = None
        try:
            remaining = None if self.deadline is None else max(0.001, self.deadline - time.monotonic())
            stream = stream_for(target.api)
            extra = {}
            if self.tools or self.tool_choice or self.response_format:
                extra = {"tools": self.tools, "tool_choice": self.tool_choice,
                         "response_format": self.response_format}
            async for event in stream(self.client, target, self.messages, max_tokens=self.max_tokens,
                                      temperature=self.temperature, headers=headers, total_timeout_s=remaining,
                                      **extra):
                if event.kind in ("delta", "tool_call"):
                    last_at = time.monotonic()
                    if not self.chunks:
                        first_at = last_at
                    self.chunks += event.chunks
                    if event.kind == "delta":
                        self.text.append(event.text)
                        self.queue.put_nowait(AttemptEvent(self, text=event.text))
                    else:
                        self.tool_pieces += 1
                        self.queue.put_nowait(AttemptEvent(self, tool=ToolPiece(
                            event.tool_index, event.tool_call_id, event.tool_name, event.arguments_fragment)))
                elif event.kind == "usage":
                    usage = (event.input_tokens, event.output_tokens)
                    record.cached_input_tokens, record.reasoning_tokens = (event.cached_input_tokens,
                                                                           event.reasoning_tokens)
                elif event.kind == "finish":
                    finish = event.finish_reason
            record.outcome = AttemptOutcome.SUCCESS
            record.finish = FINISH.get(finish, FinishStatus.COMPLETE)
        except ProviderError as exc:
            record.outcome, record.http_status, record.error = exc.outcome, exc.http_status, exc.message
            record.retry_after_s, record.reason = exc.retry_after_s, exc.reason
            if exc.committed and exc.outcome not in CUT_SHORT:
                record.outcome = AttemptOutcome.TRUNCATED
        except asyncio.CancelledError:
            if self.lost_reason is None:
                record.outcome, record.error = AttemptOutcome.CANCELLED, "caller cancelled"
            raise
        finally:
            now = time.monotonic()
            record.duration_ms = round((now - start) * 1000, 3)
            if self.chunks:
                record.ttft_ms = round((first_at - start) * 1000, 3)
                if self.chunks > 1:
                    record.tpot_ms = round((last_at - first_at) * 1000 / (self.chunks - 1), 4)
            if usage:
                record.input_tokens, record.output_tokens = usage
            elif self.chunks or record.outcome in MAY_BE_BILLED:
                # No usage from the provider: estimate (one token per streamed chunk); a cancelled call
                # may still be billed for its input.
                record.input_tokens, record.output_tokens = self.estimated_input_tokens, self.chunks
                record.usage_estimated = True
            record.cost_usd = self.cost(target.model, record.input_tokens, record.output_tokens)
            self._finish_span(span, finish)
            self.observe(record, True, self.decision_id)
            self.queue.put_nowait(AttemptEvent(self, done=True))

    def _finish_span(self, span, finish: str) -> None:
        record = self.record
        if not span.is_recording():
            span.end()
            return
        set_attributes(span, {
            semconv.GEN_AI_USAGE_INPUT_TOKENS: record.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: record.output_tokens,
            semconv.GEN_AI_RESPONSE_FINISH_REASONS: (finish,) if finish else None,
            semconv.ATTEMPT_OUTCOME: record.outcome_label, semconv.TTFT_MS: record.ttft_ms or None,
            semconv.COST_USD: record.cost_usd, semconv.HTTP_RESPONSE_STATUS_CODE: record.http_status or None,
            semconv.ATTEMPT_HEDGE: record.hedge or None, semconv.ATTEMPT_TRY: record.try_number,
        })
        if self.text and capture_content():
            span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES,
                               json.dumps([{"role": "assistant", "content": "".join(self.text)}]))
        if record.outcome not in NOT_ERRORS:
            span.set_attribute(semconv.ERROR_TYPE, record.outcome_label)
            span.set_status(Status(StatusCode.ERROR, record.error[:200]))
        span.end()
