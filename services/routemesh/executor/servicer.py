"""The ExecutorService servicer: converts protos, runs the engine, relays with coalescing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc

from routemesh.common.errors import InvalidRequest, RoutemeshError
from routemesh.common.messages import messages_to_tuples, validate_messages
from routemesh.common.outcomes import ObservationPhase
from routemesh.executor.engine import (
    AttemptRecord,
    ExecutionEngine,
    ExecutionInput,
    ExecutionOutcome,
    ExecutionSettings,
    ToolPiece,
)
from routemesh.v1 import common_pb2, executor_pb2, executor_pb2_grpc, telemetry_pb2


def attempt_to_proto(a: AttemptRecord) -> common_pb2.Attempt:
    """The proto of an attempt record; the outcome enum holds the proto's number, so it goes in as it is."""
    return common_pb2.Attempt(
        model=a.model, provider=a.provider, outcome=a.outcome, http_status=a.http_status,
        error=a.error, ttft_ms=a.ttft_ms, duration_ms=a.duration_ms, cost_usd=a.cost_usd, hedge=a.hedge,
        try_number=a.try_number, error_reason=a.reason,
        usage=common_pb2.Usage(input_tokens=a.input_tokens, output_tokens=a.output_tokens,
                               estimated=a.usage_estimated, cached_input_tokens=a.cached_input_tokens,
                               reasoning_tokens=a.reasoning_tokens),
    )


def observation_of(a: AttemptRecord, finished: bool, decision_id: str) -> telemetry_pb2.Observation:
    """The telemetry observation for an attempt that started or finished."""
    obs = telemetry_pb2.Observation(
        model=a.model, provider=a.provider, decision_id=decision_id, timestamp_ms=int(time.time() * 1000),
        phase=ObservationPhase.FINISHED if finished else ObservationPhase.STARTED,
    )
    if finished:
        obs.outcome = a.outcome
        obs.ttft_ms, obs.tpot_ms, obs.cost_usd = a.ttft_ms, a.tpot_ms, a.cost_usd
        obs.usage.CopyFrom(common_pb2.Usage(input_tokens=a.input_tokens, output_tokens=a.output_tokens,
                                            estimated=a.usage_estimated))
    return obs


def result_to_proto(o: ExecutionOutcome) -> executor_pb2.ExecutionResult:
    return executor_pb2.ExecutionResult(
        status=o.status, model=o.model, provider=o.provider, cost_usd=o.cost_usd, error=o.error,
        usage=common_pb2.Usage(input_tokens=o.input_tokens, output_tokens=o.output_tokens,
                               estimated=o.usage_estimated, cached_input_tokens=o.cached_input_tokens,
                               reasoning_tokens=o.reasoning_tokens),
        attempts=[attempt_to_proto(a) for a in o.attempts],
    )


def message_dicts(messages) -> list[dict]:
    """Messages as the adapters take them, tool calls and tool answers included."""
    out = []
    for (role, content), message in zip(messages_to_tuples(messages), messages, strict=True):
        item: dict = {"role": role, "content": content}
        if message.tool_calls:
            item["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments_json or "{}"}
                                  for c in message.tool_calls]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def tool_dicts(tools, violations: list[tuple[str, str]]) -> list[dict] | None:
    """Tools as the adapters take them; bad JSON schemas become field violations."""
    out = []
    for i, tool in enumerate(tools):
        try:
            parameters = json.loads(tool.parameters_json) if tool.parameters_json else {"type": "object"}
        except ValueError as exc:
            violations.append((f"tools[{i}].parameters_json", f"not valid JSON: {exc}"))
            continue
        if not tool.name:
            violations.append((f"tools[{i}].name", "must not be empty"))
        out.append({"name": tool.name, "description": tool.description, "parameters": parameters})
    return out or None


def to_input(request: executor_pb2.ExecuteRequest) -> ExecutionInput:
    validate_messages(request.messages)
    violations: list[tuple[str, str]] = []
    tools = tool_dicts(request.tools, violations)
    if not request.plan:
        violations.append(("plan", "at least one model is required"))
    if request.max_tokens <= 0:
        violations.append(("max_tokens", "must be positive"))
    if violations:
        raise InvalidRequest("invalid execute request", field_violations=violations)
    return ExecutionInput(
        messages=message_dicts(request.messages), tools=tools, tool_choice=request.tool_choice,
        response_format=request.response_format,
        plan=list(request.plan), max_tokens=request.max_tokens,
        temperature=request.temperature if request.HasField("temperature") else None,
        decision_id=request.decision_id, estimated_input_tokens=request.estimated_input_tokens,
        policy_version=request.policy_version, policy_digest=request.policy_digest,
        settings=settings_of(request.options) if request.HasField("options") else ExecutionSettings(),
    )


def settings_of(options: executor_pb2.ExecutionOptions) -> ExecutionSettings:
    defaults = ExecutionSettings()
    return ExecutionSettings(
        max_tries_per_model=options.max_tries_per_model or defaults.max_tries_per_model,
        backoff_initial_ms=options.backoff_initial_ms or defaults.backoff_initial_ms,
        backoff_max_ms=options.backoff_max_ms or defaults.backoff_max_ms,
        hedge_after_ms=options.hedge_after_ms, continue_on_truncation=options.continue_on_truncation,
    )


# Characters of an error message the executor passes on; the rest is cut. The message travels twice (as the
# status message and inside its rich details, next to up to LISTED_IN_ERRORS attempts in metadata), and the
# whole status stays under 4 KB even for the longest model names.
MAX_ERROR_MESSAGE = 1_000


def detached(error: RoutemeshError) -> RoutemeshError:
    """`error` as the interceptor may keep it: bounded, and holding no frame of the call that raised it.

    grpc keeps the AbortError the interceptor raises for a domain error (RPCState.abort_exception), and that
    AbortError's __context__ is this error: its traceback held every frame of the execution, and with them the
    request, its copied messages, the plan and every attempt record, in a reference cycle (frame -> context ->
    RPCState -> AbortError -> frame) that only a full collection frees, and the services' collector settings
    (common.serve.tune_gc) make those rare: 100,000-name plans kept about 100 MB a call that way (8 calls,
    81 -> 897 MB). Without its traceback and chained exceptions, an execution's state dies by reference count
    when the call ends. (common.interceptors now cuts the same chain for every service, and drops the request;
    this stays so the executor's errors are bounded before anything keeps them. Field problems are bounded
    where every error is: common.errors.MAX_FIELD_VIOLATIONS.)
    """
    error.__traceback__ = None
    error.__context__ = error.__cause__ = None
    if len(error.message) > MAX_ERROR_MESSAGE:
        error.message = error.message[:MAX_ERROR_MESSAGE - 3] + "..."
    error.args = (error.message,)
    return error


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    """Thin: validate, run the engine, send what accumulated as one message."""

    def __init__(self, engine: ExecutionEngine):
        self.engine = engine
        # Execute streams in progress (routemesh_executor_inflight_streams reads it at scrape time).
        self.streams = 0

    async def Execute(self, request: executor_pb2.ExecuteRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[executor_pb2.ExecuteResponse]:
        self.streams += 1
        try:
            async for response in self._execute(request, context):
                yield response
        except RoutemeshError as exc:
            error = detached(exc)
        else:
            return
        finally:
            self.streams -= 1
        # Raised outside the except block, so that nothing chains to it, and from a frame that no longer holds
        # the request: this frame lives on in the error's traceback (see detached).
        del request
        raise error

    async def _execute(self, request: executor_pb2.ExecuteRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[executor_pb2.ExecuteResponse]:
        # The plan first: nothing is copied or validated for a plan no router could have made.
        self.engine.check_plan(request.plan, request.policy_version, request.policy_digest)
        execution = to_input(request)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining - 0.02
        # The engine drains its queue into batches itself: whatever arrived while a message was being
        # sent goes out as one message.
        async for batch in self.engine.execute_batches(execution, deadline):
            text = "".join(item for item in batch if isinstance(item, str))
            tools = [common_pb2.ToolCallDelta(index=p.index, id=p.id, name=p.name,
                                              arguments_fragment=p.arguments_fragment)
                     for p in batch if isinstance(p, ToolPiece)]
            if text or tools:
                yield executor_pb2.ExecuteResponse(delta=common_pb2.Delta(text=text, tool_calls=tools))
            for item in batch:
                if isinstance(item, ExecutionOutcome):
                    yield executor_pb2.ExecuteResponse(result=result_to_proto(item))
