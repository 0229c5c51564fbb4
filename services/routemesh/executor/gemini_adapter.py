"""Streams one answer from the Google Gemini API (streamGenerateContent, SSE), mapping failures to outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
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
    status_reason,
    text_of,
    tool_arguments,
    tool_calls_of,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# finishReason -> the OpenAI finish_reason the rest of the executor speaks; others pass through lowercased.
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_STATUSES: dict[str, Reason] = {
    "RESOURCE_EXHAUSTED": "rate_limit",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "auth",
    "NOT_FOUND": "not_found",
    "INTERNAL": "server",
    "UNAVAILABLE": "server",
    "DEADLINE_EXCEEDED": "timeout",
}
_SYSTEM_ROLES = ("system", "developer")
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_VERSIONED = re.compile(r"/v1(alpha|beta)?\d*$")


def stream_url(base_url: str, model: str) -> str:
    """The streaming endpoint; base URLs are the API root, or the root plus a version such as /v1beta."""
    base = base_url.rstrip("/")
    if not _VERSIONED.search(base):
        base += "/v1beta"
    name = model.removeprefix("models/")
    return f"{base}/models/{quote(name, safe='-._~')}:streamGenerateContent"


def _parts(message: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """A message's parts; records the name of each tool call in `names` for the results that follow."""
    text = text_of(message.get("content"))
    if message.get("role") == "tool":
        # Gemini matches results to calls by function name, not by id.
        call_id = str(message.get("tool_call_id", ""))
        name = names.get(call_id) or str(message.get("name") or call_id)
        return [{"functionResponse": {"name": name, "response": {"content": text}}}]
    calls = tool_calls_of(message) if message.get("role") == "assistant" else []
    if not calls:
        return [{"text": text}]
    for c in calls:
        names[str(c.get("id", ""))] = str(c.get("name", ""))
    return ([{"text": text}] if text else []) + [
        {"functionCall": {"name": c.get("name", ""), "args": tool_arguments(c.get("arguments"))}} for c in calls]


def request_body(messages: list[dict[str, Any]], max_tokens: int, temperature: float | None, *,
                 tools: list[dict[str, Any]] | None = None, tool_choice: str = "",
                 response_format: str = "") -> dict[str, Any]:
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        if message.get("role") in _SYSTEM_ROLES:
            text = text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        role = "model" if message.get("role") == "assistant" else "user"
        parts = _parts(message, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    config: dict[str, Any] = {"maxOutputTokens": max_tokens}
    if temperature is not None:
        config["temperature"] = temperature
    if response_format == "json_object":
        config["responseMimeType"] = "application/json"
    body: dict[str, Any] = {"contents": contents, "generationConfig": config}
    if system:
        body["systemInstruction"] = {"parts": system}
    if tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t["name"], "description": t.get("description", ""),
             "parameters": t.get("parameters") or {"type": "object", "properties": {}}} for t in tools]}]
        if tool_choice:
            mode: dict[str, Any] = {"mode": _TOOL_MODES.get(tool_choice, "ANY")}
            if tool_choice not in _TOOL_MODES:
                mode["allowedFunctionNames"] = [tool_choice]
            body["toolConfig"] = {"functionCallingConfig": mode}
    return body


def _error_fields(payload: Any) -> tuple[str, str, list[Any]]:
    """The message, gRPC status name and details of a Google error body (a JSON array when not SSE)."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", "", []
    message, status, details = error.get("message"), error.get("status"), error.get("details")
    return (message if isinstance(message, str) else "", status if isinstance(status, str) else "",
            details if isinstance(details, list) else [])


def error_reason(status: int, payload: Any) -> Reason:
    """The typed reason of a Gemini error body with its HTTP status (0 for an error mid-stream)."""
    message, grpc_status, details = _error_fields(payload)
    lowered = message.lower()
    infos = [d.get("reason") for d in details if isinstance(d, dict) and "ErrorInfo" in str(d.get("@type"))]
    # An invalid key is a 400 INVALID_ARGUMENT here, not a 401.
    if "API_KEY_INVALID" in infos or "api key not valid" in lowered or "api key expired" in lowered:
        return "auth"
    if "token count" in lowered and "exceeds the maximum" in lowered:
        return "context_length"
    if grpc_status in _STATUSES:
        return _STATUSES[grpc_status]
    return status_reason(status) if status else "server"


def retry_delay(payload: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("31s", "0.5s"), if the error carries one."""
    for detail in _error_fields(payload)[2]:
        if isinstance(detail, dict) and "RetryInfo" in str(detail.get("@type")):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and re.fullmatch(r"\d+(\.\d+)?s", delay):
                return float(delay[:-1])
    return None


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
    """Yield deltas and tool calls, one usage event and exactly one final finish event.

    Raises ProviderError on failure.
    """
    call = StreamCall(client, target, messages, total_timeout_s)
    request_headers = {"Accept": "text/event-stream", **(headers or {})}
    if target.api_key:
        # A header, never the ?key= query parameter: URLs end up in logs, traces and error messages.
        request_headers["x-goog-api-key"] = target.api_key
    response = await call.send(stream_url(target.base_url or DEFAULT_BASE_URL, target.upstream_model),
                               body=request_body(messages, max_tokens, temperature, tools=tools,
                                                 tool_choice=tool_choice, response_format=response_format),
                               headers=request_headers, params={"alt": "sse"})
    try:
        if response.status_code >= 400:
            body = await call.read_body(response)
            payload = json_or_none(body)
            detail = _error_fields(payload)[0] or body.decode("utf-8", errors="replace")
            raise call.status_error(response, detail, error_reason(response.status_code, payload),
                                    retry_after_s=retry_delay(payload))
        reader = call.reader(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            events = _json_chunks(response, reader)
        else:
            events = _sse_chunks(reader)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        await response.aclose()


class _Answer:
    """Folds GenerateContentResponse chunks into stream events; the usage metadata of the last one wins."""

    def __init__(self, reader: StreamReader):
        self.reader = reader
        self.usage: dict[str, Any] = {}
        self.tool_calls = 0

    def feed(self, payload: Any) -> Iterator[StreamEvent]:
        reader = self.reader
        if not isinstance(payload, dict):
            return
        if payload.get("error"):
            reason = error_reason(0, payload)
            outcome = AttemptOutcome.RATE_LIMITED if reason == "rate_limit" else AttemptOutcome.UPSTREAM_ERROR
            raise reader.fail(outcome, f"error in stream: {_error_fields(payload)[0]}", reason)
        if isinstance(payload.get("usageMetadata"), dict):
            self.usage = payload["usageMetadata"]
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            # The prompt itself was blocked: no candidates follow.
            reader.finish_reason, reader.done = "content_filter", True
        candidates = payload.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            return
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            # thought summaries are reasoning, not answer text
            if isinstance(part, dict) and not part.get("thought"):
                text = part.get("text")
                if isinstance(text, str) and text:
                    reader.committed = True
                    yield StreamEvent("delta", text=text)
                call = part.get("functionCall")
                if isinstance(call, dict):
                    yield self._tool_call(call)
        finish = candidate.get("finishReason")
        if isinstance(finish, str) and finish and finish != "FINISH_REASON_UNSPECIFIED":
            # No terminator event follows: the finishing chunk is the last one.
            reader.finish_reason, reader.done = FINISH_REASONS.get(finish, finish.lower()), True

    def _tool_call(self, call: dict[str, Any]) -> StreamEvent:
        # Function calls arrive whole; Gemini may omit ids, so the position makes one.
        index, self.tool_calls = self.tool_calls, self.tool_calls + 1
        self.reader.committed = True
        return StreamEvent("tool_call", tool_index=index, tool_call_id=str(call.get("id") or f"call_{index}"),
                           tool_name=str(call.get("name") or ""), arguments_fragment=json.dumps(call.get("args") or {}))

    def end(self) -> Iterator[StreamEvent]:
        if not self.reader.finish_reason:
            raise self.reader.fail(AttemptOutcome.UPSTREAM_ERROR, "stream ended without a finish reason", "server")
        if self.usage:
            usage = self.usage
            # candidatesTokenCount leaves out thinking; ours counts all output, as OpenAI does.
            thoughts = int_field(usage, "thoughtsTokenCount")
            yield StreamEvent(
                "usage",
                input_tokens=int_field(usage, "promptTokenCount") + int_field(usage, "toolUsePromptTokenCount"),
                output_tokens=int_field(usage, "candidatesTokenCount") + thoughts,
                cached_input_tokens=int_field(usage, "cachedContentTokenCount"),
                reasoning_tokens=thoughts,
            )
        yield StreamEvent("finish", finish_reason=finish_with_tools(self.reader.finish_reason, self.tool_calls > 0))


async def _sse_chunks(reader: StreamReader) -> AsyncIterator[StreamEvent]:
    answer = _Answer(reader)
    batches = reader.batches()
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for sse in batch:
                try:
                    payload = orjson.loads(sse.data)
                except ValueError:
                    raise reader.fail(AttemptOutcome.UPSTREAM_ERROR, "malformed JSON in stream", "server") from None
                for event in answer.feed(payload):
                    yield event
    for event in answer.end():
        yield event


async def _json_chunks(response: HttpResponse, reader: StreamReader) -> AsyncIterator[StreamEvent]:
    """Without alt=sse (a proxy dropped it) the same chunks arrive as one JSON array."""
    call = reader.call
    try:
        async with asyncio.timeout_at(call.first_token_deadline):
            payload = json.loads(await response.aread())
    except TimeoutError:
        raise ProviderError(AttemptOutcome.TIMEOUT, call.scrub("no complete response before the first-token timeout"),
                            reason="timeout") from None
    except (HttpError, ValueError):
        raise ProviderError(AttemptOutcome.UPSTREAM_ERROR, call.scrub("malformed non-streaming response"),
                            reason="server") from None
    answer = _Answer(reader)
    for chunk in payload if isinstance(payload, list) else [payload]:
        for event in answer.feed(chunk):
            yield event
    for event in answer.end():
        yield event
