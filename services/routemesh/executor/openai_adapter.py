"""Streams one chat completion from an OpenAI-compatible endpoint, mapping every failure to an outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.http import HttpClient, HttpError, HttpResponse
from routemesh.executor.provider_base import (
    ProviderError,
    ProviderTarget,
    Reason,
    StreamCall,
    StreamEvent,
    StreamReader,
    finish_with_tools,
    int_field,
    json_or_none,
    parse_retry_after,
    status_reason,
    tool_calls_of,
)

# Re-exported: these types lived here before the other adapters shared them.
__all__ = ["OpenAIQuirks", "ProviderError", "ProviderTarget", "StreamEvent", "parse_retry_after",
           "stream_chat"]

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_POLICY_CODES = {"content_filter", "content_policy_violation", "ResponsibleAIPolicyViolation"}


@dataclass(frozen=True)
class OpenAIQuirks:
    """How one member of the OpenAI-compatible family differs from api.openai.com on the wire."""

    key_header: str = "Authorization"
    key_prefix: str = "Bearer "
    # The model is named by the URL (Azure ".../deployments/{name}/chat/completions"), not by the body.
    deployment_url: bool = False
    api_version_param: str = ""  # query parameter carrying target.api_version, when the API is versioned
    default_api_version: str = ""

    def url_and_params(self, target: ProviderTarget) -> tuple[str, dict[str, str] | None]:
        base = target.base_url.rstrip("/")
        if not self.deployment_url:
            return f"{base}/chat/completions", None
        version = target.api_version or self.default_api_version
        root = base if base.endswith("/openai") else f"{base}/openai"
        if version == "v1":
            # Azure's unversioned v1 API: OpenAI's own paths under /openai/v1, the model in the body.
            return f"{root}/v1/chat/completions", None
        params = {self.api_version_param: version} if self.api_version_param and version else None
        return f"{root}/deployments/{quote(target.upstream_model, safe='-._~')}/chat/completions", params

    def model_in_body(self, target: ProviderTarget) -> bool:
        return not self.deployment_url or (target.api_version or self.default_api_version) == "v1"


DEFAULT_QUIRKS = OpenAIQuirks()


def _error_fields(payload: Any) -> tuple[str, str, str]:
    """The message, code and type of an OpenAI error body (any may be "")."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return error, "", ""
    if not isinstance(error, dict):
        return "", "", ""
    inner = error.get("innererror")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    code = error.get("code")
    code = code if isinstance(code, str) and code else (inner_code if isinstance(inner_code, str) else "")
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    kind = error.get("type") if isinstance(error.get("type"), str) else ""
    return message, code, kind


def _error_detail(body: bytes | dict[str, Any]) -> str:
    """The `error.message` of an OpenAI error body, or the body's text."""
    payload = json_or_none(body) if isinstance(body, bytes) else body
    message = _error_fields(payload)[0]
    if message:
        return message
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else json.dumps(payload)


def error_reason(status: int, payload: Any) -> Reason:
    """The typed reason of an OpenAI-style error body with its HTTP status (0 for an error mid-stream)."""
    message, code, kind = _error_fields(payload)
    lowered = message.lower()
    if code in _CONTEXT_CODES or "maximum context length" in lowered or "context_length_exceeded" in lowered:
        return "context_length"
    if code in _POLICY_CODES or kind in _POLICY_CODES:
        return "content_policy"
    if code in ("rate_limit_exceeded", "429") or kind in ("rate_limit_exceeded", "requests", "tokens"):
        return "rate_limit"
    if code == "invalid_api_key" or kind == "authentication_error":
        return "auth"
    if code in ("model_not_found", "DeploymentNotFound"):
        return "not_found"
    return status_reason(status) if status else "server"


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message in OpenAI's shape; messages without tool calls or results pass through untouched."""
    calls = tool_calls_of(message)
    if message.get("role") == "assistant" and calls:
        return {"role": "assistant", "content": message.get("content") or None, "tool_calls": [
            {"id": c.get("id", ""), "type": "function",
             "function": {"name": c.get("name", ""), "arguments": c.get("arguments") or "{}"}}
            for c in calls]}
    if message.get("role") == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id", ""),
                "content": message.get("content") or ""}
    return message


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _request_body(target: ProviderTarget, messages: list[dict[str, Any]], max_tokens: int,
                  temperature: float | None, quirks: OpenAIQuirks, tools: list[dict[str, Any]] | None = None,
                  tool_choice: str = "", response_format: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": [_wire_message(m) for m in messages],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if not quirks.model_in_body(target):
        del body["model"]
    if temperature is not None:
        body["temperature"] = temperature
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t["name"], "description": t.get("description", ""),
            "parameters": t.get("parameters") or {"type": "object", "properties": {}}}} for t in tools]
        # Only with tools: OpenAI rejects a tool_choice that has no tools to choose from.
        if tool_choice:
            body["tool_choice"] = _tool_choice(tool_choice)
    if response_format == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


async def stream_chat(
    client: HttpClient,
    target: ProviderTarget,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float | None,
    headers: dict[str, str] | None = None,
    total_timeout_s: float | None = None,
    quirks: OpenAIQuirks = DEFAULT_QUIRKS,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str = "",
    response_format: str = "",
) -> AsyncIterator[StreamEvent]:
    """Yield deltas and tool-call pieces, usage (when sent) and exactly one final finish event.

    Raises ProviderError on failure.
    """
    call = StreamCall(client, target, messages, total_timeout_s)
    request_headers = {"Accept": "text/event-stream", **(headers or {})}
    if target.api_key:
        request_headers[quirks.key_header] = f"{quirks.key_prefix}{target.api_key}"
    url, params = quirks.url_and_params(target)
    body = _request_body(target, messages, max_tokens, temperature, quirks, tools, tool_choice, response_format)
    response = await call.send(url, body=body, headers=request_headers, params=params)
    try:
        if response.status_code >= 400:
            payload = json_or_none(body := await call.read_body(response))
            raise call.status_error(response, _error_detail(body) if body else "",
                                    error_reason(response.status_code, payload))
        if response.headers.get("content-type", "").startswith("application/json"):
            events = _whole_completion(response, call)
        else:
            events = _sse_completion(call.reader(response))
        # aclosing: when our caller stops early, the inner generator's clean-up must run now, not at GC.
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        await response.aclose()


def _usage_event(usage: Any) -> StreamEvent | None:
    if not isinstance(usage, dict):
        return None
    return StreamEvent(
        "usage",
        input_tokens=int_field(usage, "prompt_tokens"),
        output_tokens=int_field(usage, "completion_tokens"),
        cached_input_tokens=int_field(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=int_field(usage, "completion_tokens_details", "reasoning_tokens"),
    )


async def _whole_completion(response: HttpResponse, call: StreamCall) -> AsyncIterator[StreamEvent]:
    """A provider that ignored stream=true and answered with one chat.completion object."""
    try:
        async with asyncio.timeout_at(call.first_token_deadline):
            payload = json.loads(await response.aread())
        choice = payload["choices"][0]
        text = choice.get("message", {}).get("content") or ""
        calls = [c for c in choice.get("message", {}).get("tool_calls") or [] if isinstance(c, dict)]
        function = [c.get("function") if isinstance(c.get("function"), dict) else {} for c in calls]
        reason = choice.get("finish_reason") or "stop"
    except TimeoutError:
        raise ProviderError(AttemptOutcome.TIMEOUT, call.scrub("no complete response before the first-token timeout"),
                            reason="timeout") from None
    except (HttpError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError(AttemptOutcome.UPSTREAM_ERROR, call.scrub("malformed non-streaming response"),
                            reason="server") from None
    if text:
        yield StreamEvent("delta", text=text)
    for index, (tool_call, fn) in enumerate(zip(calls, function, strict=True)):
        arguments = fn.get("arguments")
        yield StreamEvent("tool_call", tool_index=index, tool_call_id=str(tool_call.get("id") or f"call_{index}"),
                          tool_name=str(fn.get("name") or ""),
                          arguments_fragment=arguments if isinstance(arguments, str) else json.dumps(arguments))
    usage = _usage_event(payload.get("usage"))
    if usage:
        yield usage
    yield StreamEvent("finish", finish_reason=finish_with_tools(reason, bool(calls)))


def _tool_call_events(pieces: Any, started: set[int]) -> list[StreamEvent]:
    """Events for one delta's tool_calls pieces; `started` holds the indices whose first piece was seen."""
    events = []
    for position, piece in enumerate(pieces if isinstance(pieces, list) else ()):
        if not isinstance(piece, dict):
            continue
        index = piece.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        fn = piece.get("function") if isinstance(piece.get("function"), dict) else {}
        arguments = fn.get("arguments")
        fragment = arguments if isinstance(arguments, str) else "" if arguments is None else json.dumps(arguments)
        if index in started:
            # Some compatible servers repeat id and name on every piece; only the first piece names the call.
            if fragment:
                events.append(StreamEvent("tool_call", tool_index=index, arguments_fragment=fragment))
            continue
        started.add(index)
        events.append(StreamEvent("tool_call", tool_index=index,
                                  tool_call_id=str(piece.get("id") or f"call_{index}"),
                                  tool_name=str(fn.get("name") or ""), arguments_fragment=fragment))
    return events


async def _sse_completion(reader: StreamReader) -> AsyncIterator[StreamEvent]:
    """The stream's events; the content of the chunks one network read brought is one delta (StreamEvent.chunks),
    ended early by a tool-call piece or usage so the order holds, and delivered before an error that followed it."""
    started: set[int] = set()
    batches = reader.batches()
    async with contextlib.aclosing(batches):
        async for batch in batches:
            text: list[str] = []
            error: ProviderError | None = None
            for sse in batch:
                if reader.done:
                    continue  # nothing after [DONE] counts
                if sse.data.strip() == "[DONE]":
                    reader.done = True
                    continue
                try:
                    payload = orjson.loads(sse.data)
                except ValueError:
                    error = reader.fail(AttemptOutcome.UPSTREAM_ERROR, "malformed JSON in stream", "server")
                    break
                if not isinstance(payload, dict):
                    continue
                if payload.get("error"):
                    error = reader.fail(AttemptOutcome.UPSTREAM_ERROR, f"error in stream: {_error_detail(payload)}",
                                        error_reason(0, payload))
                    break
                choices = payload.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    delta = choices[0].get("delta")
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str) and content:
                        reader.committed = True
                        text.append(content)
                    pieces = _tool_call_events(delta.get("tool_calls") if isinstance(delta, dict) else None, started)
                    if pieces:
                        if text:
                            yield StreamEvent("delta", text="".join(text), chunks=len(text))
                            text = []
                        reader.committed = True
                        for event in pieces:
                            yield event
                    if choices[0].get("finish_reason"):
                        reader.finish_reason = str(choices[0]["finish_reason"])
                usage = _usage_event(payload.get("usage"))
                if usage:
                    if text:
                        yield StreamEvent("delta", text="".join(text), chunks=len(text))
                        text = []
                    yield usage
            if text:
                yield StreamEvent("delta", text="".join(text), chunks=len(text))
            if error is not None:
                raise error
    if not reader.finish_reason:
        raise reader.fail(AttemptOutcome.UPSTREAM_ERROR, "stream ended without a finish reason", "server")
    yield StreamEvent("finish", finish_reason=finish_with_tools(reader.finish_reason, bool(started)))
