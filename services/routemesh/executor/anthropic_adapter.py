"""Streams one answer from the Anthropic Messages API, mapping every failure to an outcome and a reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

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
    status_reason,
    text_of,
    tool_arguments,
    tool_calls_of,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
# stop_reason -> the OpenAI finish_reason the rest of the executor speaks; others pass through unchanged.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_TYPES: dict[str, Reason] = {
    "rate_limit_error": "rate_limit",
    "overloaded_error": "server",
    "api_error": "server",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "not_found_error": "not_found",
    # Bytes rather than tokens, but the cure is the same: a provider that accepts bigger requests.
    "request_too_large": "context_length",
    "timeout_error": "timeout",
}
_SYSTEM_ROLES = ("system", "developer")
# Anthropic has no JSON-mode switch; asking in the system prompt is the documented way.
JSON_INSTRUCTION = "Respond with a single JSON object only."
_TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}


def messages_url(base_url: str) -> str:
    """The Messages endpoint: base URLs are the API root (SDK convention) or, tolerated, the root plus /v1."""
    base = base_url.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def _content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    """A turn's content: plain text, or blocks when the message carries tool calls or a tool result."""
    text = text_of(message.get("content"))
    if message.get("role") == "tool":
        return [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""), "content": text}]
    calls = tool_calls_of(message) if message.get("role") == "assistant" else []
    if not calls:
        return text
    # Anthropic rejects empty text blocks.
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return blocks + [{"type": "tool_use", "id": c.get("id", ""), "name": c.get("name", ""),
                      "input": tool_arguments(c.get("arguments"))} for c in calls]


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def request_body(target: ProviderTarget, messages: list[dict[str, Any]], max_tokens: int,
                 temperature: float | None, *, tools: list[dict[str, Any]] | None = None, tool_choice: str = "",
                 response_format: str = "") -> dict[str, Any]:
    system = [text_of(m.get("content")) for m in messages if m.get("role") in _SYSTEM_ROLES]
    if response_format == "json_object":
        system.append(JSON_INSTRUCTION)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in _SYSTEM_ROLES:
            continue
        role = "assistant" if message.get("role") == "assistant" else "user"
        content = _content(message)
        if turns and turns[-1]["role"] == role:
            # Merged so that strict validators (older API versions, compatible proxies) see alternating turns;
            # consecutive tool results must arrive together in one user turn anyway.
            previous = turns[-1]["content"]
            if isinstance(previous, str) and isinstance(content, str):
                turns[-1]["content"] = previous + "\n\n" + content
            else:
                turns[-1]["content"] = _blocks(previous) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    body: dict[str, Any] = {"model": target.upstream_model, "max_tokens": max_tokens, "messages": turns,
                            "stream": True}
    if any(system):
        body["system"] = "\n\n".join(s for s in system if s)
    if temperature is not None:
        # Anthropic accepts 0..1 where OpenAI accepts 0..2; clamping beats a 400 for the whole request.
        body["temperature"] = min(max(temperature, 0.0), 1.0)
    if tools:
        body["tools"] = [{"name": t["name"], "description": t.get("description", ""),
                          "input_schema": t.get("parameters") or {"type": "object", "properties": {}}}
                         for t in tools]
        if tool_choice:
            body["tool_choice"] = _TOOL_CHOICES.get(tool_choice) or {"type": "tool", "name": tool_choice}
    return body


def _error_fields(payload: Any) -> tuple[str, str]:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", ""
    message, kind = error.get("message"), error.get("type")
    return (message if isinstance(message, str) else "", kind if isinstance(kind, str) else "")


def error_reason(status: int, payload: Any) -> Reason:
    """The typed reason of an Anthropic error body with its HTTP status (0 for an error event mid-stream)."""
    message, kind = _error_fields(payload)
    lowered = message.lower()
    if kind == "invalid_request_error" and ("prompt is too long" in lowered or "context window" in lowered):
        return "context_length"
    if kind in _ERROR_TYPES:
        return _ERROR_TYPES[kind]
    return status_reason(status) if status else "server"


async def stream_chat(
    client: HttpClient,
    target: ProviderTarget,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float | None,
    headers: dict[str, str] | None = None,
    total_timeout_s: float | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str = "",
    response_format: str = "",
) -> AsyncIterator[StreamEvent]:
    """Yield deltas and tool-call pieces, one usage event and exactly one final finish event.

    Raises ProviderError on failure.
    """
    call = StreamCall(client, target, messages, total_timeout_s)
    request_headers = {"Accept": "text/event-stream", "anthropic-version": ANTHROPIC_VERSION, **(headers or {})}
    if target.api_key:
        request_headers["x-api-key"] = target.api_key
    response = await call.send(messages_url(target.base_url or DEFAULT_BASE_URL),
                               body=request_body(target, messages, max_tokens, temperature, tools=tools,
                                                 tool_choice=tool_choice, response_format=response_format),
                               headers=request_headers)
    try:
        if response.status_code >= 400:
            body = await call.read_body(response)
            payload = json_or_none(body)
            detail = _error_fields(payload)[0] or body.decode("utf-8", errors="replace")
            raise call.status_error(response, detail, error_reason(response.status_code, payload))
        if response.headers.get("content-type", "").startswith("application/json"):
            events = _whole_message(response, call)
        else:
            events = _sse_message(call.reader(response))
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        await response.aclose()


def _usage_event(usage: dict[str, Any]) -> StreamEvent:
    # Anthropic's input_tokens excludes cache reads and writes; ours counts the whole prompt, as OpenAI does.
    cached = int_field(usage, "cache_read_input_tokens")
    prompt = int_field(usage, "input_tokens") + int_field(usage, "cache_creation_input_tokens") + cached
    return StreamEvent("usage", input_tokens=prompt, output_tokens=int_field(usage, "output_tokens"),
                       cached_input_tokens=cached)


def _merge_usage(usage: dict[str, Any], update: Any) -> None:
    # message_delta counts are cumulative, and fields it does not know yet may be null.
    if isinstance(update, dict):
        usage.update({k: v for k, v in update.items() if isinstance(v, int) and not isinstance(v, bool)})


async def _sse_message(reader: StreamReader) -> AsyncIterator[StreamEvent]:
    usage: dict[str, Any] = {}
    tool_blocks: dict[Any, int] = {}  # content block index -> tool_index
    batches = reader.batches()
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for sse in batch:
                if reader.done:
                    continue  # nothing after message_stop counts
                try:
                    payload = orjson.loads(sse.data)
                except ValueError:
                    raise reader.fail(AttemptOutcome.UPSTREAM_ERROR, "malformed JSON in stream", "server") from None
                if not isinstance(payload, dict):
                    continue
                kind = payload.get("type") or sse.event
                if kind == "content_block_delta":
                    delta = payload.get("delta")
                    # thinking and signature deltas are not answer text
                    if isinstance(delta, dict) and delta.get("type") == "text_delta":
                        text = delta.get("text")
                        if isinstance(text, str) and text:
                            reader.committed = True
                            yield StreamEvent("delta", text=text)
                    elif isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                        fragment = delta.get("partial_json")
                        index = tool_blocks.get(payload.get("index"))
                        if index is not None and isinstance(fragment, str) and fragment:
                            reader.committed = True
                            yield StreamEvent("tool_call", tool_index=index, arguments_fragment=fragment)
                elif kind == "content_block_start":
                    block = payload.get("content_block")
                    if isinstance(block, dict) and block.get("type") == "tool_use":
                        index = tool_blocks[payload.get("index")] = len(tool_blocks)
                        reader.committed = True
                        yield StreamEvent("tool_call", tool_index=index, tool_call_id=str(block.get("id") or ""),
                                          tool_name=str(block.get("name") or ""))
                elif kind == "message_start":
                    message = payload.get("message")
                    _merge_usage(usage, message.get("usage") if isinstance(message, dict) else None)
                elif kind == "message_delta":
                    delta = payload.get("delta")
                    stop = delta.get("stop_reason") if isinstance(delta, dict) else None
                    if isinstance(stop, str) and stop:
                        reader.finish_reason = STOP_REASONS.get(stop, stop)
                    _merge_usage(usage, payload.get("usage"))
                elif kind == "message_stop":
                    reader.done = True
                elif kind == "error":
                    reason = error_reason(0, payload)
                    outcome = AttemptOutcome.RATE_LIMITED if reason == "rate_limit" else AttemptOutcome.UPSTREAM_ERROR
                    message, error_type = _error_fields(payload)
                    raise reader.fail(outcome, f"error in stream: {error_type} {message}".strip(), reason)
    if not reader.finish_reason:
        raise reader.fail(AttemptOutcome.UPSTREAM_ERROR, "stream ended without a stop reason", "server")
    if usage:
        yield _usage_event(usage)
    yield StreamEvent("finish", finish_reason=finish_with_tools(reader.finish_reason, bool(tool_blocks)))


async def _whole_message(response: HttpResponse, call: StreamCall) -> AsyncIterator[StreamEvent]:
    """A proxy that ignored stream=true and answered with one Message object."""
    try:
        async with asyncio.timeout_at(call.first_token_deadline):
            payload = json.loads(await response.aread())
        blocks = payload["content"]
        text = "".join(b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        calls = [StreamEvent("tool_call", tool_index=i, tool_call_id=str(b.get("id") or ""),
                             tool_name=str(b.get("name") or ""), arguments_fragment=json.dumps(b.get("input") or {}))
                 for i, b in enumerate(b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use")]
        stop = payload.get("stop_reason") or "end_turn"
    except TimeoutError:
        raise ProviderError(AttemptOutcome.TIMEOUT, call.scrub("no complete response before the first-token timeout"),
                            reason="timeout") from None
    except (HttpError, ValueError, KeyError, TypeError, AttributeError):
        raise ProviderError(AttemptOutcome.UPSTREAM_ERROR, call.scrub("malformed non-streaming response"),
                            reason="server") from None
    if text:
        yield StreamEvent("delta", text=text)
    for event in calls:
        yield event
    usage: dict[str, Any] = {}
    _merge_usage(usage, payload.get("usage"))
    if usage:
        yield _usage_event(usage)
    yield StreamEvent("finish", finish_reason=finish_with_tools(STOP_REASONS.get(stop, stop), bool(calls)))
