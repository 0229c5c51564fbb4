"""Streams one chat completion from an OpenAI-compatible endpoint, mapping every failure to an outcome."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from routemesh.executor.sse import SSEDecoder

Outcome = Literal["rate_limited", "upstream_error", "connect_error", "timeout", "truncated", "config_error"]
_MAX_MESSAGE_CHARS = 200
# After [DONE] the body should end at once; wait this long for its end so the connection can be reused.
_DRAIN_AFTER_DONE_S = 0.25
# Prompt fragments shorter than this are too common to be worth scrubbing from upstream messages.
_MIN_SCRUB_CHARS = 12


@dataclass
class ProviderTarget:
    """Where and how to call one upstream model; resolved from the policy by the caller."""

    provider: str
    model: str
    upstream_model: str
    base_url: str  # like "http://host:port/v1"
    api_key: str | None = None
    connect_timeout_s: float = 2.0
    first_token_timeout_s: float = 20.0
    between_tokens_timeout_s: float = 20.0

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        return (
            f"ProviderTarget(provider={self.provider!r}, model={self.model!r}, "
            f"upstream_model={self.upstream_model!r}, base_url={self.base_url!r}, api_key={key}, "
            f"connect_timeout_s={self.connect_timeout_s}, "
            f"first_token_timeout_s={self.first_token_timeout_s}, "
            f"between_tokens_timeout_s={self.between_tokens_timeout_s})"
        )

    __str__ = __repr__


@dataclass
class StreamEvent:
    """A content delta, the provider's token usage, or the single final event with the finish reason."""

    kind: Literal["delta", "usage", "finish"]
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""


class ProviderError(Exception):
    """A failed call; `committed` is True when content had already been yielded to the caller."""

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        http_status: int = 0,
        retry_after_s: float | None = None,
        committed: bool = False,
    ):
        super().__init__(message)
        self.outcome: Outcome = outcome
        self.message = message
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.committed = committed

    def __repr__(self) -> str:
        return (
            f"ProviderError(outcome={self.outcome!r}, http_status={self.http_status}, "
            f"retry_after_s={self.retry_after_s}, committed={self.committed}, message={self.message!r})"
        )


class _Scrubber:
    """Shortens upstream text and removes the API key and prompt fragments from it."""

    def __init__(self, target: ProviderTarget, messages: list[dict[str, Any]]):
        self._secrets = [target.api_key] if target.api_key else []
        contents = (m.get("content") for m in messages)
        self._prompts = [c for c in contents if isinstance(c, str) and len(c) >= _MIN_SCRUB_CHARS]
        self._label = f"{target.provider}/{target.upstream_model}"

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for prompt in self._prompts:
            text = text.replace(prompt, "[prompt]")
        text = " ".join(text.split())
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[: _MAX_MESSAGE_CHARS - 3] + "..."
        return f"{self._label}: {text}"


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if given."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_detail(body: bytes | dict[str, Any]) -> str:
    """The `error.message` of an OpenAI error body, or the body's text."""
    payload: Any = body
    if isinstance(body, bytes):
        try:
            payload = json.loads(body)
        except ValueError:
            return body.decode("utf-8", errors="replace")
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else json.dumps(payload)


def _request_body(
    target: ProviderTarget, messages: list[dict[str, Any]], max_tokens: int, temperature: float | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if temperature is not None:
        body["temperature"] = temperature
    return body


async def stream_chat(
    client: httpx.AsyncClient,
    target: ProviderTarget,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float | None,
    headers: dict[str, str] | None = None,
    total_timeout_s: float | None = None,
) -> AsyncIterator[StreamEvent]:
    """Yield deltas, usage (when sent) and exactly one final finish event; raise ProviderError on failure."""
    scrub = _Scrubber(target, messages)
    loop = asyncio.get_running_loop()
    started = loop.time()
    total_deadline = started + total_timeout_s if total_timeout_s is not None else math.inf
    first_token_deadline = min(started + target.first_token_timeout_s, total_deadline)
    request_headers = {"Accept": "text/event-stream", **(headers or {})}
    if target.api_key:
        request_headers["Authorization"] = f"Bearer {target.api_key}"
    # Read timing is enforced below per chunk; httpx only bounds connecting and sending.
    timeouts = httpx.Timeout(connect=target.connect_timeout_s, read=None, write=target.connect_timeout_s,
                             pool=target.connect_timeout_s)
    try:
        request = client.build_request(
            "POST", f"{target.base_url.rstrip('/')}/chat/completions",
            json=_request_body(target, messages, max_tokens, temperature),
            headers=request_headers,
            timeout=timeouts,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
        raise ProviderError("config_error", scrub(f"invalid provider URL ({type(exc).__name__})")) from None
    try:
        async with asyncio.timeout_at(first_token_deadline):
            response = await client.send(request, stream=True)
    except TimeoutError:
        which = "total" if total_deadline <= first_token_deadline else "first-token"
        raise ProviderError("timeout", scrub(f"no response headers within the {which} timeout")) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderError("connect_error", scrub(f"cannot connect ({type(exc).__name__}: {exc})")) from None
    except httpx.UnsupportedProtocol as exc:
        raise ProviderError("config_error", scrub(f"invalid provider URL ({type(exc).__name__})")) from None
    except httpx.HTTPError as exc:
        message = scrub(f"request failed ({type(exc).__name__}: {exc})")
        raise ProviderError("upstream_error", message) from None
    try:
        if response.status_code >= 400:
            raise await _status_error(response, scrub, first_token_deadline)
        if response.headers.get("content-type", "").startswith("application/json"):
            events = _whole_completion(response, scrub, first_token_deadline)
        else:
            events = _sse_completion(response, target, scrub, first_token_deadline, total_deadline)
        # aclosing: when our caller stops early, the inner generator's clean-up must run now, not at GC.
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        await response.aclose()


async def _status_error(response: httpx.Response, scrub: _Scrubber, deadline: float) -> ProviderError:
    status = response.status_code
    try:
        async with asyncio.timeout_at(deadline):
            body = await response.aread()
        detail = _error_detail(body)
    except (TimeoutError, httpx.HTTPError):
        detail = ""
    message = scrub(f"HTTP {status}" + (f": {detail}" if detail else ""))
    if status == 429:
        return ProviderError("rate_limited", message, http_status=status,
                             retry_after_s=parse_retry_after(response.headers))
    retry_after = parse_retry_after(response.headers) if status == 503 else None
    return ProviderError("upstream_error", message, http_status=status, retry_after_s=retry_after)


def _finish_event(reason: str) -> StreamEvent:
    return StreamEvent("finish", finish_reason=reason)


def _usage_event(usage: Any) -> StreamEvent | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return StreamEvent(
        "usage",
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=completion if isinstance(completion, int) else 0,
    )


async def _whole_completion(
    response: httpx.Response, scrub: _Scrubber, deadline: float
) -> AsyncIterator[StreamEvent]:
    """A provider that ignored stream=true and answered with one chat.completion object."""
    try:
        async with asyncio.timeout_at(deadline):
            payload = json.loads(await response.aread())
        choice = payload["choices"][0]
        text = choice.get("message", {}).get("content") or ""
        reason = choice.get("finish_reason") or "stop"
    except TimeoutError:
        raise ProviderError("timeout", scrub("no complete response before the first-token timeout")) from None
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError("upstream_error", scrub("malformed non-streaming response")) from None
    if text:
        yield StreamEvent("delta", text=text)
    usage = _usage_event(payload.get("usage"))
    if usage:
        yield usage
    yield _finish_event(reason)


async def _sse_completion(
    response: httpx.Response,
    target: ProviderTarget,
    scrub: _Scrubber,
    first_token_deadline: float,
    total_deadline: float,
) -> AsyncIterator[StreamEvent]:
    loop = asyncio.get_running_loop()
    decoder = SSEDecoder()
    chunks = response.aiter_bytes()
    committed = False
    finish_reason = ""
    saw_done = False

    def failure(outcome: Outcome, what: str) -> ProviderError:
        if outcome == "upstream_error" and committed:
            outcome = "truncated"
        return ProviderError(outcome, scrub(what), http_status=response.status_code, committed=committed)

    try:
        while True:
            if saw_done:
                deadline = min(loop.time() + _DRAIN_AFTER_DONE_S, total_deadline)
            elif committed:
                deadline = min(loop.time() + target.between_tokens_timeout_s, total_deadline)
            else:
                deadline = first_token_deadline
            ended = False
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
                events = decoder.feed(chunk)
            except StopAsyncIteration:
                events, ended = decoder.close(), True
            except TimeoutError:
                if finish_reason or saw_done:
                    break  # the answer is complete, or known to be cut short; only the body's end is late
                if loop.time() >= total_deadline:
                    raise failure("timeout", "stream exceeded the total timeout") from None
                which = "between-tokens" if committed else "first-token"
                raise failure("timeout", f"no data within the {which} timeout") from None
            except httpx.HTTPError as exc:
                if finish_reason or saw_done:
                    break
                raise failure("upstream_error", f"stream broken ({type(exc).__name__})") from None
            for sse in events:
                if saw_done:
                    break
                if sse.data.strip() == "[DONE]":
                    saw_done = True
                    continue
                try:
                    payload = json.loads(sse.data)
                except ValueError:
                    raise failure("upstream_error", "malformed JSON in stream") from None
                if not isinstance(payload, dict):
                    continue
                if payload.get("error"):
                    raise failure("upstream_error", f"error in stream: {_error_detail(payload)}")
                choices = payload.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    delta = choices[0].get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        committed = True
                        yield StreamEvent("delta", text=text)
                    if choices[0].get("finish_reason"):
                        finish_reason = str(choices[0]["finish_reason"])
                usage = _usage_event(payload.get("usage"))
                if usage:
                    yield usage
            if ended:
                break
    finally:
        await chunks.aclose()
    if not finish_reason:
        raise failure("upstream_error", "stream ended without a finish reason")
    yield _finish_event(finish_reason)
