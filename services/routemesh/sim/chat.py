"""The simulated chat-completions endpoint: OpenAI wire format, simulated latency and injected faults."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from routemesh.sim.profiles import ModelProfile
from routemesh.sim.state import FAULTS, STATE, Plan, SimState
from routemesh.sim.text import generate_tokens

# Tokens due within this many seconds are sent in the same write, which keeps timer wake-ups bounded.
_BATCH_WINDOW_S = 0.004
_MALFORMED_LINE = b'data: {"id": "broken", "choices": [\n\n'


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class ChatRequest:
    """The parts of a chat-completions request the simulator uses."""

    model: str
    prompt_text: str  # every message, for seeding
    last_user_text: str  # what the answer is "about"
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool_call: tuple[str, str] | None = None  # (function name, arguments JSON) when the answer calls a tool


def _tool_call(body: dict[str, Any], messages: list[dict[str, Any]], last_user: str) -> tuple[str, str] | None:
    """Call a tool when offered one and asked to (tool_choice required or named, or the user names the tool),
    unless the conversation already ends with a tool's answer; deterministic, like the rest of the sim."""
    tools = body.get("tools") or []
    names = [t.get("function", {}).get("name", "") for t in tools if isinstance(t, dict)]
    names = [n for n in names if n]
    choice = body.get("tool_choice")
    if not names or choice == "none" or messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name", "")
    elif choice == "required":
        name = names[0]
    else:
        name = next((n for n in names if n.lower() in last_user.lower()), "")
    if not name:
        return None
    return name, json.dumps({"query": last_user[:60]})


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadRequest(f"'{name}' must be a positive integer", name)
    return value


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' is required", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array", "messages")
    texts, last_user, chars = [], "", 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"messages[{index}] must be an object with a 'role'", "messages")
        text = _content_text(message.get("content"))
        texts.append(f"{message['role']}: {text}")
        chars += len(text)
        if message["role"] == "user":
            last_user = text
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadRequest("'stream' must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _BadRequest("'stream_options' must be an object", "stream_options")
    return ChatRequest(
        model=model,
        prompt_text="\n".join(texts),
        last_user_text=last_user or texts[-1],
        prompt_tokens=max(1, round(chars / 4)) + 3 * len(messages),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        tool_call=_tool_call(body, messages, last_user),
    )


def _answer(state: SimState, profile: ModelProfile, chat: ChatRequest) -> tuple[list[str], str]:
    """The tokens and finish reason, a pure function of (seed, model, messages, max_tokens)."""
    rng = random.Random(f"{state.seed}\x1f{chat.model}\x1f{chat.prompt_text}")
    target = rng.randint(profile.min_tokens, max(profile.min_tokens, profile.max_tokens))
    tokens = generate_tokens(rng, chat.last_user_text, target)
    if chat.max_tokens is not None and len(tokens) > chat.max_tokens:
        return tokens[: chat.max_tokens], "length"
    return tokens, "stop"


def _usage(chat: ChatRequest, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": chat.prompt_tokens + completion_tokens,
    }


def _status_error(plan: Plan, profile: ModelProfile) -> web.Response:
    if plan.status == 429:
        retry = profile.retry_after_s
        return error_response(
            429,
            f"Rate limit reached for {profile.name} (simulated). Please try again in {retry:g}s.",
            type_="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(math.ceil(retry))},
        )
    if plan.status == 503:
        return error_response(503, f"{profile.name} is unavailable (simulated outage).", type_="server_error",
                              code="service_unavailable")
    return error_response(500, "The server had an error while processing your request (simulated).",
                          type_="server_error")


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _hang_forever() -> None:
    # The handler is cancelled when the client disconnects or the server stops.
    await asyncio.Event().wait()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    request: web.Request, chat: ChatRequest, plan: Plan, tokens: list[str], finish: str
) -> tuple[web.StreamResponse, str]:
    """Write the SSE stream; return the response and the outcome to record."""
    state = request.app[STATE]
    head = {"id": state.completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": chat.model}
    # Content chunks differ only in the token, so they are spliced from two fixed halves.
    head_json = json.dumps(head, separators=(",", ":"))[:-1]
    prefix = f'data: {head_json},"choices":[{{"index":0,"delta":{{"content":'.encode()
    suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}]}
    await response.write(_sse(first))
    await _sleep(plan.jittered(plan.ttft_s))
    if chat.tool_call is not None:
        return await _stream_tool_call(response, chat, head, plan)
    loop = asyncio.get_running_loop()
    due = loop.time()
    pending: list[bytes] = []
    for index, token in enumerate(tokens):
        if index in (plan.cut_at, plan.stall_at, plan.malformed_at):
            if pending:
                await response.write(b"".join(pending))
                pending.clear()
            if index == plan.cut_at:
                # Closing the transport mid-body leaves the client with an incomplete chunked response.
                request.transport.close()  # type: ignore[union-attr]
                return response, "cut"
            if index == plan.malformed_at:
                await response.write(_MALFORMED_LINE)
            if index == plan.stall_at:
                await _sleep(plan.stall_s)
                due = loop.time()
        if index and plan.token_interval_s > 0:
            due += plan.jittered(plan.token_interval_s)
            wait = due - loop.time()
            if wait > _BATCH_WINDOW_S:
                if pending:
                    await response.write(b"".join(pending))
                    pending.clear()
                await asyncio.sleep(wait)
        pending.append(prefix + json.dumps(token).encode() + suffix)
    last = {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]}
    pending.append(_sse(last))
    if chat.include_usage:
        pending.append(_sse({**head, "choices": [], "usage": _usage(chat, len(tokens))}))
    if plan.send_done:
        pending.append(b"data: [DONE]\n\n")
    await response.write(b"".join(pending))
    await response.write_eof()
    return response, plan.outcome


async def _stream_tool_call(response: web.StreamResponse, chat: ChatRequest, head: dict[str, Any],
                            plan: Plan) -> tuple[web.StreamResponse, str]:
    """A streamed tool call: id and name first, then the arguments in pieces, then finish "tool_calls"."""
    assert chat.tool_call is not None
    name, arguments = chat.tool_call
    pieces = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]]
    deltas = [{"index": 0, "id": f"call_{zlib.crc32(chat.prompt_text.encode()):08x}", "type": "function",
               "function": {"name": name, "arguments": ""}}]
    deltas += [{"index": 0, "function": {"arguments": piece}} for piece in pieces]
    body = [_sse({**head, "choices": [{"index": 0, "delta": {"tool_calls": [d]}, "logprobs": None,
                                       "finish_reason": None}]}) for d in deltas]
    body.append(_sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}))
    if chat.include_usage:
        body.append(_sse({**head, "choices": [], "usage": _usage(chat, len(pieces) + 1)}))
    body.append(b"data: [DONE]\n\n")
    await response.write(b"".join(body))
    await response.write_eof()
    return response, plan.outcome


async def _complete(
    request: web.Request, chat: ChatRequest, plan: Plan, tokens: list[str], finish: str
) -> tuple[web.StreamResponse, str]:
    """Answer a non-streaming request after the whole simulated generation time."""
    state = request.app[STATE]
    await _sleep(plan.jittered(plan.ttft_s) + sum(plan.jittered(plan.token_interval_s) for _ in tokens[1:]))
    await _sleep(plan.stall_s if plan.stall_at is not None else 0)
    if plan.cut_at is not None:
        request.transport.close()  # type: ignore[union-attr]
        return web.Response(), "cut"
    if plan.malformed_at is not None:
        broken = web.Response(body=b'{"id": "broken", "choices": [', content_type="application/json")
        return broken, "malformed"
    body = {
        "id": state.completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                     "logprobs": None, "finish_reason": finish}],
        "usage": _usage(chat, len(tokens)),
    }
    if chat.tool_call is not None:
        name, arguments = chat.tool_call
        body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{zlib.crc32(chat.prompt_text.encode()):08x}", "type": "function",
             "function": {"name": name, "arguments": arguments}}]}
        body["choices"][0]["finish_reason"] = "tool_calls"
    return web.json_response(body), plan.outcome


def _delay_scale(request: web.Request) -> float | None:
    raw = request.headers.get("x-sim-delay-scale")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise _BadRequest("x-sim-delay-scale must be a finite non-negative number")
    return value


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        try:
            body = await request.json()
        except ValueError:
            raise _BadRequest("We could not parse the JSON body of your request.") from None
        chat = parse_chat(body)
        scale = _delay_scale(request)
        fault = request.headers.get("x-sim-fault", "").strip().lower()
        if fault and fault not in FAULTS:
            raise _BadRequest(f"unknown x-sim-fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
    except _BadRequest as err:
        return error_response(400, err.message, param=err.param)
    profile = state.profiles.get(chat.model)
    if profile is None:
        message = f"The model `{chat.model}` does not exist or you do not have access to it."
        return error_response(404, message, param="model", code="model_not_found")
    tokens, finish = _answer(state, profile, chat)
    plan = state.plan(profile, fault, len(tokens), scale)
    if plan.status != 200:
        state.record(chat.model, plan.outcome)
        return _status_error(plan, profile)
    # A client that goes away mid-response is recorded as such, unless a fault was already under way.
    outcome = "disconnected" if plan.outcome == "ok" else plan.outcome
    try:
        if plan.hang:
            await _hang_forever()
        respond = _stream if chat.stream else _complete
        response, outcome = await respond(request, chat, plan, tokens, finish)
        return response
    except ConnectionError:
        return web.Response()
    finally:
        state.record(chat.model, outcome)
