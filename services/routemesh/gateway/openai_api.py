"""OpenAI chat-completions JSON to ChatRequest and back: request checks, completions, chunks, error bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from routemesh.common.outcomes import FinishStatus
from routemesh.v1 import common_pb2, router_pb2

ROLES = {"system": common_pb2.ROLE_SYSTEM, "developer": common_pb2.ROLE_SYSTEM, "user": common_pb2.ROLE_USER,
         "assistant": common_pb2.ROLE_ASSISTANT, "tool": common_pb2.ROLE_TOOL}
# Statuses of an answer that ended cleanly -> OpenAI's finish_reason; keys equal the proto's ints.
FINISH_REASONS = {
    FinishStatus.COMPLETE: "stop",
    FinishStatus.LENGTH: "length",
    FinishStatus.CONTENT_FILTER: "content_filter",
    # A fallback model completed the cut answer: the caller got a whole answer.
    FinishStatus.CONTINUED: "stop",
    FinishStatus.TOOL_CALLS: "tool_calls",
}
TOOL_CHOICES = ("auto", "none", "required")
RESPONSE_FORMATS = ("text", "json_object")
_INT32_MAX = 2**31 - 1
# Deeper than any chat body or tool schema needs; past it a body is refused before anything walks it
# recursively (protobuf conversion, json.dumps of tool parameters, the router's own checks).
MAX_JSON_DEPTH = 64
# Keys echoed back in an error's `param` are cut: the caller chose them, and they can be megabytes long.
_PARAM_KEY_CHARS = 64


class GatewayError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",  # noqa: A002
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None,
                 close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        # Close the connection after the answer: the rest of the request body was not read (too slow, too
        # large), and reading it to keep the connection alive is what the refusal is meant to avoid.
        self.close = close

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(param: str | None, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def _unsupported(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="unsupported_parameter")


# Parameters whose effect routemesh cannot honour yet: refused, never silently dropped, because the
# caller would get an answer of another shape than the one it asked for.
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "functions": (bool, "the legacy `functions` parameter is not supported; use `tools`"),
    "function_call": (lambda v: v is not None, "the legacy `function_call` parameter is not supported; "
                                               "use `tool_choice`"),
    "parallel_tool_calls": (lambda v: v is False, "parallel_tool_calls=false is not supported yet"),
    "n": (lambda v: v not in (None, 1), "only n=1 is supported"),
    "logprobs": (bool, "logprobs are not supported"),
    "top_logprobs": (lambda v: v is not None, "logprobs are not supported"),
    "stop": (bool, "stop sequences are not supported yet"),
    "audio": (lambda v: v is not None, "audio output is not supported"),
    "modalities": (lambda v: v not in (None, ["text"]), "only the text modality is supported"),
    "prediction": (lambda v: v is not None, "predicted outputs are not supported"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_NOT_FINITE = "must be a finite number; NaN, infinity and numbers beyond a double's range are not accepted"


def _finite(value: Any, param: str) -> float:
    """`value` as a float, or a 400 naming `param`: NaN and infinity would pass every `<` and `>` check
    downstream (a NaN cost cap is never exceeded), and an int past a double's range cannot be converted."""
    if not _is_number(value):
        raise _bad(param, f"`{param}` must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _bad(param, f"`{param}` {_NOT_FINITE}")
    return number


def _path(link: tuple[Any, str | int] | None) -> str:
    """`messages[0].content` for the chain of keys ending at `link` (a (parent link, key) pair)."""
    keys: list[str | int] = []
    while link is not None:
        link, key = link
        keys.append(key)
    out = ""
    for key in reversed(keys):
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            key = key if len(key) <= _PARAM_KEY_CHARS else key[:_PARAM_KEY_CHARS] + "..."
            out += f".{key}" if out else key
    return out


def check_tree(body: Any) -> None:
    """Refuse (400) a parsed body nested deeper than MAX_JSON_DEPTH or holding a non-finite number anywhere.

    Anywhere, not only in the parameters routemesh reads: a NaN inside a tool's JSON Schema would be sent on
    as `NaN`, which is not JSON, and a provider would fail on it instead of the caller hearing why. One
    iterative walk (no recursion, so depth cannot hurt it); only containers are pushed.
    """
    stack: list[tuple[Any, int, tuple[Any, str | int] | None]] = [(body, 1, None)]
    while stack:
        value, depth, link = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise GatewayError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels",
                               param=_path(link) or None, code="json_too_deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, (link, key)))
            elif type(child) is float and not math.isfinite(child):
                param = _path((link, key))
                raise _bad(param, f"`{param}` {_NOT_FINITE}")


def load_json(raw: bytes) -> Any:
    """The parsed body, or a 400: not JSON, not UTF-8, nested too deep, or holding NaN or infinity.

    The stdlib parser (exact integers, unlike orjson, which turns 2**64 into a float) accepts the literals
    NaN and Infinity and reads 1e999 as inf; check_tree refuses all of them. It recurses in C and raises
    RecursionError near 1,000 levels, before check_tree can count: that is a 400 too, never a 500.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "the request body is not valid JSON", code="invalid_json") from None
    except RecursionError:
        raise GatewayError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels",
                           code="json_too_deep") from None
    if isinstance(body, dict | list):
        check_tree(body)
    elif type(body) is float and not math.isfinite(body):
        raise _bad(None, f"the request body {_NOT_FINITE}")
    return body


def _text_of(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _bad(param, "content must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        elif kind in ("text", "refusal"):
            raise _bad(f"{param}[{j}].{kind}", f"a {kind} part needs a `{kind}` string")
        else:
            raise _unsupported(f"{param}[{j}].type", f"content part type {kind!r} is not supported yet; "
                                                     "only text parts are")
    return "\n".join(texts)


def _messages(raw: Any) -> list[common_pb2.Message]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "`messages` must be a non-empty list of messages",
                   code="missing_required_parameter" if raw is None else "invalid_value")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "each message must be an object with `role` and `content`")
        role = item.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"unknown role {role!r}; expected one of {sorted(ROLES)}")
        if item.get("function_call"):
            raise _unsupported(f"{where}.function_call", "the legacy `function_call` is not supported; "
                                                         "use `tool_calls`")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad(f"{where}.name", "`name` must be a string")
        message = common_pb2.Message(role=ROLES[role], content=_text_of(item.get("content"), f"{where}.content"),
                                     name=name or "")
        tool_calls = item.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant":
                raise _bad(f"{where}.tool_calls", "only assistant messages carry `tool_calls`")
            message.tool_calls.extend(_tool_calls(tool_calls, f"{where}.tool_calls"))
        tool_call_id = item.get("tool_call_id")
        if tool_call_id is not None:
            if role != "tool" or not isinstance(tool_call_id, str):
                raise _bad(f"{where}.tool_call_id", "`tool_call_id` must be a string, on tool messages only")
            message.tool_call_id = tool_call_id
        messages.append(message)
    return messages


def _tool_calls(raw: Any, where: str) -> list[common_pb2.ToolCall]:
    """An assistant turn's earlier tool calls: [{"id", "type": "function", "function": {"name", "arguments"}}]."""
    if not isinstance(raw, list):
        raise _bad(where, "`tool_calls` must be a list")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise _bad(at, "each tool call must be an object")
        if call.get("type", "function") != "function":
            raise _unsupported(f"{at}.type", "only tool calls of type `function` are supported")
        function = call.get("function")
        if not isinstance(function, dict):
            raise _bad(f"{at}.function", "a tool call needs a `function` object")
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments", "")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"{at}.id", "a tool call needs an `id` string")
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.function.name", "a tool call needs a `function.name` string")
        if not isinstance(arguments, str):
            raise _bad(f"{at}.function.arguments", "`function.arguments` must be a JSON string")
        calls.append(common_pb2.ToolCall(id=call_id, name=name, arguments_json=arguments))
    return calls


def _tools(raw: Any) -> list[common_pb2.Tool]:
    """`tools`: functions only; the parameters' JSON Schema travels as JSON text."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("tools", "`tools` must be a list")
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(item, dict):
            raise _bad(at, "each tool must be an object")
        if item.get("type") != "function":
            raise _unsupported(f"{at}.type", f"tool type {item.get('type')!r} is not supported; only `function` is")
        function = item.get("function")
        if not isinstance(function, dict):
            raise _bad(f"{at}.function", "a function tool needs a `function` object")
        name, description = function.get("name"), function.get("description")
        parameters = function.get("parameters")
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.function.name", "a function tool needs a `function.name` string")
        if description is not None and not isinstance(description, str):
            raise _bad(f"{at}.function.description", "`function.description` must be a string")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"{at}.function.parameters", "`function.parameters` must be a JSON Schema object")
        tools.append(common_pb2.Tool(name=name, description=description or "",
                                     parameters_json=json.dumps(parameters) if parameters is not None else ""))
    return tools


def _tool_choice(raw: Any, tools: list[common_pb2.Tool]) -> str:
    """"auto", "none", "required" or a tool name (from {"type": "function", "function": {"name"}})."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        if raw not in TOOL_CHOICES:
            raise _bad("tool_choice", f"`tool_choice` must be one of {list(TOOL_CHOICES)} or a function object")
        choice = raw
    elif isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict):
        choice = raw["function"].get("name")
        if not isinstance(choice, str) or not choice:
            raise _bad("tool_choice.function.name", "`tool_choice.function.name` must be a string")
        if choice not in {t.name for t in tools}:
            raise _bad("tool_choice.function.name", f"`tool_choice` names {choice!r}, which is not in `tools`")
    else:
        raise _bad("tool_choice", '`tool_choice` must be a string or {"type": "function", "function": {"name"}}')
    if not tools and choice not in ("auto", "none"):
        raise _bad("tool_choice", "`tool_choice` needs `tools`")
    return choice


def _max_tokens(body: dict[str, Any]) -> tuple[int, str]:
    """The output cap and the parameter name the caller used (error messages name it back)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(name, f"`{name}` must be an integer")
        if value > _INT32_MAX:
            raise _bad(name, f"`{name}` is too large")
        # Negative values go to the router, whose check (and message) is the one every caller sees.
        return value, name
    return 0, "max_tokens"


def _routing(raw: Any) -> router_pb2.RoutingOptions:
    options = router_pb2.RoutingOptions()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _bad("routemesh", "`routemesh` must be an object")
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "strategy": (lambda v: isinstance(v, str), "a string"),
        "provider": (lambda v: isinstance(v, str), "a string"),
        # Numbers; their finiteness is checked below, with its own message.
        "max_cost_usd": (_is_number, "a number"),
        "latency_target_ms": (_is_number, "a number"),
        "allow_fallback": (lambda v: isinstance(v, bool), "true or false"),
        "required_capabilities": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
                                  "a list of strings"),
    }
    for key, value in raw.items():
        if key not in checks:
            raise _bad(f"routemesh.{key}", f"unknown routemesh option {key!r}; known: {sorted(checks)}")
        if value is None:
            continue
        valid, expected = checks[key]
        if not valid(value):
            raise _bad(f"routemesh.{key}", f"`routemesh.{key}` must be {expected}")
        if key == "required_capabilities":
            options.required_capabilities.extend(dict.fromkeys(value))
        elif key in ("max_cost_usd", "latency_target_ms"):
            setattr(options, key, _finite(value, f"routemesh.{key}"))
        else:
            setattr(options, key, value)
    return options


def _response_format(body: dict[str, Any]) -> str:
    fmt = body.get("response_format")
    if fmt is None:
        return ""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in RESPONSE_FORMATS:
        return kind
    if kind == "json_schema":
        raise _unsupported("response_format.type", "json_schema is not supported yet; use json_object")
    raise _bad("response_format.type", "`response_format.type` must be text or json_object")


@dataclass
class ParsedChat:
    """A checked chat-completions request."""

    request: router_pb2.ChatRequest
    stream: bool = False
    include_usage: bool = False
    max_tokens_param: str = "max_tokens"

    def param_of(self, router_field: str) -> str:
        """The OpenAI parameter for a field the router named in a BadRequest violation."""
        if router_field == "max_tokens":
            return self.max_tokens_param
        if router_field.startswith("routing."):
            return "routemesh." + router_field.removeprefix("routing.")
        tool, dot, rest = router_field.partition("].")
        if router_field.startswith("tools[") and dot:
            return f"{tool}].function." + {"parameters_json": "parameters"}.get(rest, rest)
        return router_field


_FEEDBACK_FIELDS = frozenset({"id", "decision_id", "score", "thumbs", "label", "comment"})
_THUMBS = {"up": common_pb2.THUMBS_UP, "down": common_pb2.THUMBS_DOWN}


def parse_feedback(body: Any) -> common_pb2.Feedback:
    """POST /v1/feedback's body: {"id": "chatcmpl-..." (or "decision_id"), "score": 0..1 or "thumbs": "up"|"down",
    "label", "comment"}. The router and telemetry check the rest (ranges, lengths, the id's existence)."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - _FEEDBACK_FIELDS)
    if unknown:
        raise GatewayError(400, f"unknown field {unknown[0]!r}; feedback takes {', '.join(sorted(_FEEDBACK_FIELDS))}",
                           param=unknown[0], code="unknown_parameter")
    ident = body.get("id", body.get("decision_id"))
    if not isinstance(ident, str) or not ident:
        raise GatewayError(400, "id is required: the chat completion's id (chatcmpl-...)", param="id",
                           code="missing_required_parameter")
    feedback = common_pb2.Feedback(decision_id=ident)
    score, thumbs = body.get("score"), body.get("thumbs")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise GatewayError(400, "score must be a number in [0, 1]", param="score", code="invalid_type")
        feedback.score = float(score)
    if thumbs is not None:
        if thumbs not in _THUMBS:
            raise GatewayError(400, 'thumbs must be "up" or "down"', param="thumbs", code="invalid_value")
        feedback.thumbs = _THUMBS[thumbs]
    for name in ("label", "comment"):
        value = body.get(name, "")
        if not isinstance(value, str):
            raise GatewayError(400, f"{name} must be a string", param=name, code="invalid_type")
        setattr(feedback, name, value)
    return feedback


def feedback_param(field: str) -> str:
    """The body parameter a router field problem is about ("feedback.decision_id" is the body's "id")."""
    name = field.removeprefix("feedback.")
    return "id" if name == "decision_id" else name


def parse_chat(body: Any) -> ParsedChat:
    """Check an OpenAI chat-completions body and build the ChatRequest; raise GatewayError (400)."""
    if not isinstance(body, dict):
        raise _bad(None, "the request body must be a JSON object", code="invalid_json")
    for name, (refused, message) in _UNSUPPORTED.items():
        if refused(body.get(name)):
            raise _unsupported(name, message)
    messages = _messages(body.get("messages"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "`model` must be a string")
    max_tokens, max_tokens_param = _max_tokens(body)
    tools = _tools(body.get("tools"))
    response_format = _response_format(body)
    request = router_pb2.ChatRequest(messages=messages, model=model or "auto", max_tokens=max_tokens, tools=tools,
                                     tool_choice=_tool_choice(body.get("tool_choice"), tools),
                                     response_format=response_format)
    temperature = body.get("temperature")
    if temperature is not None:
        request.temperature = _finite(temperature, "temperature")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _bad("metadata", "`metadata` must be an object of string values")
        request.metadata.update(metadata)
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _bad("user", "`user` must be a string")
        request.metadata["user"] = user
    # The router itself requires the "tools" and "json" capabilities from `tools` and `response_format`.
    request.routing.CopyFrom(_routing(body.get("routemesh")))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "`stream` must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "`stream_options` must be an object")
    return ParsedChat(request=request, stream=bool(stream), include_usage=bool((options or {}).get("include_usage")),
                      max_tokens_param=max_tokens_param)


def usage_of(final: router_pb2.Final) -> dict[str, int]:
    prompt, completion = final.usage.input_tokens, final.usage.output_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def extension_of(decision: router_pb2.Decision, final: router_pb2.Final) -> dict[str, Any]:
    """routemesh's own facts about the answer (clients ignore unknown keys)."""
    return {"decision_id": decision.decision_id, "route": decision.route, "strategy": decision.strategy,
            "provider": final.provider, "cost_usd": final.cost_usd, "attempts": len(final.attempts),
            "usage_estimated": final.usage.estimated}


@dataclass
class ToolCallsSoFar:
    """Tool-call pieces of a streamed answer, put together per call index."""

    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, pieces: Iterable[common_pb2.ToolCallDelta]) -> None:
        for piece in pieces:
            call = self.calls.setdefault(piece.index, {"id": "", "name": "", "arguments": []})
            call["id"] = call["id"] or piece.id
            call["name"] = call["name"] or piece.name
            call["arguments"].append(piece.arguments_fragment)

    def openai(self) -> list[dict[str, Any]]:
        return [{"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": "".join(call["arguments"])}}
                for _, call in sorted(self.calls.items())]


def delta_of(delta: common_pb2.Delta, *, first: bool = False) -> dict[str, Any]:
    """A chunk's delta for a router delta: content and/or tool-call pieces (id, type, name on a call's first)."""
    body: dict[str, Any] = {"role": "assistant"} if first else {}
    if delta.text or not delta.tool_calls:
        body["content"] = delta.text
    elif first:
        body["content"] = None
    if delta.tool_calls:
        pieces = []
        for piece in delta.tool_calls:
            out: dict[str, Any] = {"index": piece.index}
            if piece.id:
                out["id"], out["type"] = piece.id, "function"
            function: dict[str, Any] = {"name": piece.name} if piece.name else {}
            function["arguments"] = piece.arguments_fragment
            out["function"] = function
            pieces.append(out)
        body["tool_calls"] = pieces
    return body


def completion(decision: router_pb2.Decision, final: router_pb2.Final, text: str, created: int,
               tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{decision.decision_id}", "object": "chat.completion", "created": created,
        "model": final.model or decision.model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message,
                     "logprobs": None, "finish_reason": FINISH_REASONS[final.status]}],
        "usage": usage_of(final), "routemesh": extension_of(decision, final),
    }


def chunk(decision: router_pb2.Decision, created: int, delta: dict[str, Any], *, model: str = "",
          finish_reason: str | None = None, include_usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{decision.decision_id}", "object": "chat.completion.chunk", "created": created,
        "model": model or decision.model, "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        # As OpenAI does: every chunk carries usage null; the last one, with no choices, the totals.
        body["usage"] = None
    return body


def usage_chunk(decision: router_pb2.Decision, final: router_pb2.Final, created: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-{decision.decision_id}", "object": "chat.completion.chunk", "created": created,
            "model": final.model or decision.model, "system_fingerprint": None, "choices": [],
            "usage": usage_of(final), "routemesh": extension_of(decision, final)}


# json.dumps(value, separators=(",", ":")) builds an encoder per call; one, built once, renders the same bytes.
_compact = json.JSONEncoder(separators=(",", ":")).encode


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as compact JSON (ASCII: json.dumps escapes the rest)."""
    return b"data: " + _compact(payload).encode() + b"\n\n"


# The C string encoder json.dumps uses for a str with ensure_ascii (its default): the same bytes for the same text.
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_DELTA_MARK = "\x00delta"
DONE = b"data: [DONE]\n\n"


class ChunkStream:
    """The SSE events of one streamed answer, byte for byte what sse(chunk(...)) renders, built faster.

    Every chunk of a stream shares its id, created, model and usage: that frame is rendered once, by chunk()
    itself, and a text delta costs one string escape between its two halves. Deltas with tool-call pieces,
    and the last events, go through json.dumps as before.
    """

    __slots__ = ("decision", "created", "include_usage", "_head", "_tail")

    def __init__(self, decision: router_pb2.Decision, created: int, include_usage: bool):
        self.decision, self.created, self.include_usage = decision, created, include_usage
        # The delta is the last string of the frame (only nulls follow it), so rpartition finds the mark even
        # when an id or a model name holds the same text.
        frame = sse(chunk(decision, created, _DELTA_MARK, include_usage=include_usage)).decode()  # type: ignore[arg-type]
        head, mark, tail = frame.rpartition(_json_str(_DELTA_MARK))
        assert mark, frame
        self._head, self._tail = head, tail

    def delta(self, delta: common_pb2.Delta, *, first: bool = False) -> bytes:
        """The event for one router delta (`first`: the one that opens the answer, with the role)."""
        if delta.tool_calls:
            body = _compact(delta_of(delta, first=first))
        elif first:
            body = '{"role":"assistant","content":' + _json_str(delta.text) + "}"
        else:
            body = '{"content":' + _json_str(delta.text) + "}"
        return (self._head + body + self._tail).encode()

    def end(self, final: router_pb2.Final) -> bytes:
        """The last events of a clean answer, in one piece: the finish reason, the usage (when asked), [DONE]."""
        decision, created = self.decision, self.created
        out = sse(chunk(decision, created, {}, model=final.model, finish_reason=FINISH_REASONS[final.status],
                        include_usage=self.include_usage))
        if self.include_usage:
            out += sse(usage_chunk(decision, final, created))
        return out + DONE


def broken_answer(final: router_pb2.Final | None, detail: str = "") -> GatewayError:
    """The error for an answer that started but did not end cleanly (never a 200 with a clean finish)."""
    status = FinishStatus.label_of(final.status).upper() if final else "BROKEN"
    why = detail or (final.error if final else "") or "no reason given"
    code = "cancelled" if final is not None and final.status == FinishStatus.CANCELLED else "truncated_upstream"
    return GatewayError(502, f"the answer was cut before its end ({status}): {why}", type="upstream_error",
                        code=code)
