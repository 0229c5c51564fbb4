"""Types and timed HTTP streaming plumbing shared by every provider adapter."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.http import HttpClient, HttpConnectError, HttpError, HttpInvalidURL, HttpResponse
from routemesh.executor.sse import SSEDecoder, SSEEvent

# Why a call failed, independent of the provider: lets callers tell "try elsewhere" from "will never work".
Reason = Literal["rate_limit", "context_length", "content_policy", "auth", "not_found", "server", "timeout",
                 "connection", ""]
_MAX_MESSAGE_CHARS = 200
# After the terminal event the body should end at once; wait this long for its end so the connection can
# be reused.
_DRAIN_AFTER_DONE_S = 0.25
# Prompt fragments shorter than this are too common to be worth scrubbing from upstream messages.
_MIN_SCRUB_CHARS = 12
# After content went out, these failures cut an answer short: the caller sees a truncation.
_CUT_WHEN_COMMITTED = frozenset({AttemptOutcome.UPSTREAM_ERROR, AttemptOutcome.RATE_LIMITED})


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
    api: str = "openai"  # which adapter speaks to it: a key of providers.ADAPTERS
    api_version: str | None = None  # a dated API version where the provider needs one (Azure OpenAI)

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        return (
            f"ProviderTarget(provider={self.provider!r}, model={self.model!r}, "
            f"upstream_model={self.upstream_model!r}, base_url={self.base_url!r}, api_key={key}, "
            f"connect_timeout_s={self.connect_timeout_s}, "
            f"first_token_timeout_s={self.first_token_timeout_s}, "
            f"between_tokens_timeout_s={self.between_tokens_timeout_s}, "
            f"api={self.api!r}, api_version={self.api_version!r})"
        )

    __str__ = __repr__


@dataclass
class StreamEvent:
    """A content delta, a piece of a tool call, the provider's token usage, or the single final event.

    On usage events input_tokens counts the whole prompt (cached part included) and output_tokens the
    whole output (reasoning included), whatever the provider's own convention; cached_input_tokens and
    reasoning_tokens are the parts of those the provider reported, 0 when it did not.

    A tool call arrives as "tool_call" events sharing a tool_index (0, 1, ... in the order calls start):
    the first carries tool_call_id and tool_name, every one may carry the next arguments_fragment of the
    call's JSON arguments. The finish event's finish_reason is "tool_calls" when the model stopped to call.

    A delta may carry the text of several provider chunks that arrived in one read from the network: `chunks`
    says how many (each event costs every layer above the adapter, and a fast model's chunks arrive in bursts).
    """

    kind: Literal["delta", "tool_call", "usage", "finish"]
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    tool_index: int = 0
    tool_call_id: str = ""
    tool_name: str = ""
    arguments_fragment: str = ""
    chunks: int = 1


class ProviderError(Exception):
    """A failed call; `committed` is True when content had already been yielded to the caller."""

    def __init__(
        self,
        outcome: AttemptOutcome,
        message: str,
        *,
        http_status: int = 0,
        retry_after_s: float | None = None,
        committed: bool = False,
        reason: Reason = "",
    ):
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.committed = committed
        self.reason: Reason = reason

    def __repr__(self) -> str:
        return (
            f"ProviderError(outcome={self.outcome.label!r}, reason={self.reason!r}, http_status={self.http_status}, "
            f"retry_after_s={self.retry_after_s}, committed={self.committed}, message={self.message!r})"
        )


def _hosts(url: str) -> list[str]:
    """The host:port and host of `url`, longest first ([] when it has none, or does not parse)."""
    try:
        parts = urlsplit(url)
        names = {parts.netloc.rpartition("@")[2], parts.hostname or ""}
    except ValueError:
        return []
    return sorted((n for n in names if n), key=len, reverse=True)


class Scrubber:
    """Shortens upstream text and removes the API key, the provider's host and prompt fragments from it.

    The host may come from the control plane's environment (a policy's ${VAR}), which callers never see:
    a connect error says "the provider's host" where aiohttp names it.
    """

    def __init__(self, target: ProviderTarget, messages: list[dict[str, Any]]):
        self._secrets = [target.api_key] if target.api_key else []
        self._hosts = _hosts(target.base_url)
        contents = (m.get("content") for m in messages)
        self._prompts = [c for c in contents if isinstance(c, str) and len(c) >= _MIN_SCRUB_CHARS]
        self._label = f"{target.provider}/{target.upstream_model}"

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for host in self._hosts:
            text = text.replace(host, "<provider host>")
        for prompt in self._prompts:
            text = text.replace(prompt, "[prompt]")
        text = " ".join(text.split())
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[: _MAX_MESSAGE_CHARS - 3] + "..."
        return f"{self._label}: {text}"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if given.

    `headers` is a response's case-insensitive headers, or a plain dict with lower-case names.
    """
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


def status_reason(status: int) -> Reason:
    """The reason an HTTP status implies by itself; adapters refine 400s from the error body."""
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status in (408, 504):
        return "timeout"
    if status >= 500:
        return "server"
    return ""


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def tool_arguments(text: Any) -> dict[str, Any]:
    """A tool call's JSON arguments text as the object Anthropic and Gemini want instead of text.

    Empty arguments are {}; text that is not a JSON object (a model's broken output replayed in the
    history) is kept under "_raw" rather than dropped or failing the whole request.
    """
    if not isinstance(text, str) or not text.strip():
        return {}
    parsed = json_or_none(text.encode())
    return parsed if isinstance(parsed, dict) else {"_raw": text}


def tool_calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed entries of an assistant message's tool_calls (id, name, arguments)."""
    calls = message.get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def finish_with_tools(finish_reason: str, called: bool) -> str:
    # Providers answer a forced tool call with a plain stop; callers only need to know tools are due.
    return "tool_calls" if called and finish_reason == "stop" else finish_reason


def int_field(mapping: Any, *path: str) -> int:
    """An integer nested in dicts, or 0 when any step is missing or not of the right type."""
    value = mapping
    for key in path:
        if not isinstance(value, dict):
            return 0
        value = value.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StreamCall:
    """One streaming HTTP call: its deadlines, its scrubber, sending the request and reading the body."""

    def __init__(self, client: HttpClient, target: ProviderTarget, messages: list[dict[str, Any]],
                 total_timeout_s: float | None):
        self.client = client
        self.target = target
        self.scrub = Scrubber(target, messages)
        self.loop = asyncio.get_running_loop()
        started = self.loop.time()
        self.total_deadline = started + total_timeout_s if total_timeout_s is not None else math.inf
        self.first_token_deadline = min(started + target.first_token_timeout_s, self.total_deadline)

    async def send(self, url: str, *, body: dict[str, Any], headers: dict[str, str],
                   params: dict[str, str] | None = None) -> HttpResponse:
        """POST and wait for the response headers; every failure becomes a ProviderError."""
        target, scrub = self.target, self.scrub
        # Read timing is enforced per chunk by StreamReader; the client only bounds connecting.
        try:
            async with asyncio.timeout_at(self.first_token_deadline):
                return await self.client.post_json(url, body, headers=headers, params=params,
                                                   connect_timeout_s=target.connect_timeout_s)
        except TimeoutError:
            which = "total" if self.total_deadline <= self.first_token_deadline else "first-token"
            raise ProviderError(AttemptOutcome.TIMEOUT, scrub(f"no response headers within the {which} timeout"),
                                reason="timeout") from None
        except HttpInvalidURL as exc:
            raise ProviderError(AttemptOutcome.CONFIG_ERROR, scrub(f"invalid provider URL ({exc})")) from None
        except ValueError as exc:
            # A body JSON cannot encode, or a header value HTTP cannot carry (a key ending in a newline):
            # the text may quote the value, so only the type is told.
            raise ProviderError(AttemptOutcome.CONFIG_ERROR,
                                scrub(f"request cannot be sent ({type(exc).__name__})")) from None
        except HttpConnectError as exc:
            raise ProviderError(AttemptOutcome.CONNECT_ERROR, scrub(f"cannot connect ({exc})"),
                                reason="connection") from None
        except HttpError as exc:
            raise ProviderError(AttemptOutcome.UPSTREAM_ERROR, scrub(f"request failed ({exc})"),
                                reason="connection") from None

    async def read_body(self, response: HttpResponse) -> bytes:
        """The whole body within the first-token deadline; b"" when it cannot be read in time."""
        try:
            async with asyncio.timeout_at(self.first_token_deadline):
                return await response.aread()
        except (TimeoutError, HttpError):
            return b""

    def status_error(self, response: HttpResponse, detail: str, reason: Reason, *,
                     outcome: AttemptOutcome | None = None, retry_after_s: float | None = None) -> ProviderError:
        status = response.status_code
        message = self.scrub(f"HTTP {status}" + (f": {detail}" if detail else ""))
        if outcome is None:
            outcome = AttemptOutcome.RATE_LIMITED if status == 429 else AttemptOutcome.UPSTREAM_ERROR
        if retry_after_s is None and status in (429, 503, 529):
            retry_after_s = parse_retry_after(response.headers)
        return ProviderError(outcome, message, http_status=status, retry_after_s=retry_after_s, reason=reason)

    def reader(self, response: HttpResponse) -> StreamReader:
        return StreamReader(self, response)


class StreamReader:
    """Reads SSE events from a response body under the first-token, between-tokens and total deadlines.

    The adapter consuming events() keeps the flags current: `committed` once it yielded text (failures
    are then truncations, and the between-tokens timeout applies), `finish_reason` once the provider
    said why it stopped (a late or broken end of the body no longer matters), and `done` once the
    terminal event arrived (the body's end is only waited for briefly).
    """

    def __init__(self, call: StreamCall, response: HttpResponse):
        self.call = call
        self.response = response
        self.committed = False
        self.finish_reason = ""
        self.done = False

    def fail(self, outcome: AttemptOutcome, what: str, reason: Reason = "") -> ProviderError:
        if outcome in _CUT_WHEN_COMMITTED and self.committed:
            outcome = AttemptOutcome.TRUNCATED
        return ProviderError(outcome, self.call.scrub(what), http_status=self.response.status_code,
                             committed=self.committed, reason=reason)

    async def batches(self) -> AsyncIterator[list[SSEEvent]]:
        """The events each read from the network completed, as one list (never empty): adapters handle a burst of
        chunks at once instead of passing every chunk through each layer above them.

        The flags are read before each read, so what a consumer sets while it goes through a list is in effect for
        the next read.
        """
        call, loop = self.call, self.call.loop
        decoder = SSEDecoder()
        chunks = self.response.aiter_bytes()
        try:
            while True:
                if self.done:
                    deadline = min(loop.time() + _DRAIN_AFTER_DONE_S, call.total_deadline)
                elif self.committed:
                    deadline = min(loop.time() + call.target.between_tokens_timeout_s, call.total_deadline)
                else:
                    deadline = call.first_token_deadline
                ended = False
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                    events = decoder.feed(chunk)
                except StopAsyncIteration:
                    events, ended = decoder.close(), True
                except TimeoutError:
                    if self.finish_reason or self.done:
                        return  # the answer is complete, or known to be cut short; only the body's end is late
                    if loop.time() >= call.total_deadline:
                        what = "stream exceeded the total timeout"
                    else:
                        what = f"no data within the {'between-tokens' if self.committed else 'first-token'} timeout"
                    raise self.fail(AttemptOutcome.TIMEOUT, what, "timeout") from None
                except HttpError as exc:
                    if self.finish_reason or self.done:
                        return
                    broken = type(exc.__cause__ or exc).__name__
                    raise self.fail(AttemptOutcome.UPSTREAM_ERROR, f"stream broken ({broken})", "connection") from None
                if events:
                    yield events
                if ended:
                    return
        finally:
            await chunks.aclose()
