"""The gateway's OpenAI translation: request checks, field names, finish reasons, gRPC status mapping."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_status import rpc_status

from routemesh.common import errors
from routemesh.gateway.errors import http_error
from routemesh.gateway.openai_api import (
    FINISH_REASONS,
    GatewayError,
    ToolCallsSoFar,
    broken_answer,
    chunk,
    completion,
    delta_of,
    parse_chat,
)
from routemesh.v1 import common_pb2, router_pb2

USER = [{"role": "user", "content": "hi"}]


def test_a_full_request_maps_onto_chat_request():
    parsed = parse_chat({
        "model": "balanced", "max_completion_tokens": 77, "temperature": 0.3, "stream": True,
        "stream_options": {"include_usage": True}, "user": "u-1", "metadata": {"tenant": "acme"},
        "response_format": {"type": "json_object"}, "top_p": 0.9, "n": 1,
        "messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                     {"role": "assistant", "content": None}, {"role": "tool", "content": "42", "name": "calc"}],
        "routemesh": {"strategy": "cost", "max_cost_usd": 1, "allow_fallback": True, "provider": "sim",
                      "required_capabilities": ["json", "streaming"]},
    })
    request = parsed.request
    assert [m.role for m in request.messages] == [common_pb2.ROLE_SYSTEM, common_pb2.ROLE_USER,
                                                  common_pb2.ROLE_ASSISTANT, common_pb2.ROLE_TOOL]
    assert request.messages[1].content == "a\nb" and request.messages[3].name == "calc"
    assert (request.model, request.max_tokens, round(request.temperature, 3)) == ("balanced", 77, 0.3)
    assert dict(request.metadata) == {"tenant": "acme", "user": "u-1"}
    assert request.routing.strategy == "cost" and request.routing.max_cost_usd == 1.0
    assert request.routing.allow_fallback and request.routing.provider == "sim"
    assert list(request.routing.required_capabilities) == ["json", "streaming"]
    assert not request.routing.HasField("latency_target_ms")
    assert parsed.stream and parsed.include_usage
    assert parsed.param_of("max_tokens") == "max_completion_tokens"
    assert parsed.param_of("routing.strategy") == "routemesh.strategy"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_tool_choice_json_mode_and_tool_turns_map_onto_chat_request():
    parsed = parse_chat({
        "model": "auto", "tools": [WEATHER, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"}, "parallel_tool_calls": True,
        "messages": [{"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "call_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}],
    })
    request = parsed.request
    assert [(t.name, t.description) for t in request.tools] == [("get_weather", "Weather of a city"), ("now", "")]
    assert json.loads(request.tools[0].parameters_json) == WEATHER["function"]["parameters"]
    assert request.tools[1].parameters_json == ""
    assert request.tool_choice == "get_weather"
    assert request.response_format == "json_object"
    assert not request.routing.required_capabilities  # the router derives "tools" and "json" itself
    assert parsed.param_of("tools[0].parameters_json") == "tools[0].function.parameters"
    assert parsed.param_of("tools[1].name") == "tools[1].function.name"
    assistant, tool = request.messages[1], request.messages[2]
    assert assistant.content == "" and [(c.id, c.name, c.arguments_json) for c in assistant.tool_calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}')]
    assert (tool.role, tool.tool_call_id, tool.content) == (common_pb2.ROLE_TOOL, "call_1", '{"temp_c": 21}')
    for choice in ("auto", "none", "required"):
        assert parse_chat({"messages": USER, "tools": [WEATHER], "tool_choice": choice}).request.tool_choice == choice
    plain = parse_chat({"messages": USER, "response_format": {"type": "text"}}).request
    assert (plain.response_format, plain.tool_choice, len(plain.tools)) == ("text", "", 0)


def _delta(text: str = "", *pieces: tuple[int, str, str, str]) -> common_pb2.Delta:
    return common_pb2.Delta(text=text, tool_calls=[
        common_pb2.ToolCallDelta(index=i, id=call_id, name=name, arguments_fragment=fragment)
        for i, call_id, name, fragment in pieces])


def test_tool_call_pieces_become_chunk_deltas():
    first = delta_of(_delta("", (0, "call_1", "get_weather", "")), first=True)
    assert first == {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}
    later = delta_of(_delta("", (0, "", "", '{"city":'), (1, "call_2", "now", "{}")))
    assert later == {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}
    assert delta_of(_delta("Hel")) == {"content": "Hel"}
    assert delta_of(_delta(""), first=True) == {"role": "assistant", "content": ""}
    both = delta_of(_delta("Let me check.", (0, "call_1", "f", "")), first=True)
    assert both["content"] == "Let me check." and both["tool_calls"][0]["id"] == "call_1"
    decision = router_pb2.Decision(decision_id="d1", model="m")
    end = chunk(decision, 1, {}, finish_reason=FINISH_REASONS[common_pb2.FINISH_STATUS_TOOL_CALLS])
    assert end["choices"][0]["finish_reason"] == "tool_calls"


def test_non_streaming_answer_puts_tool_call_pieces_together():
    calls = ToolCallsSoFar()
    for delta in (_delta("", (0, "call_1", "get_weather", "")), _delta("", (0, "", "", '{"city":')),
                  _delta("", (1, "call_2", "now", "")), _delta("", (0, "", "", '"Paris"}'), (1, "", "", "{}"))):
        calls.add(delta.tool_calls)
    final = router_pb2.Final(status=common_pb2.FINISH_STATUS_TOOL_CALLS, model="m",
                             usage=common_pb2.Usage(input_tokens=3, output_tokens=4))
    body = completion(router_pb2.Decision(decision_id="d1", model="m"), final, "", 1, calls.openai())
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]
    text_only = completion(router_pb2.Decision(decision_id="d1"), router_pb2.Final(
        status=common_pb2.FINISH_STATUS_COMPLETE), "", 1, ToolCallsSoFar().openai())
    assert text_only["choices"][0]["message"] == {"role": "assistant", "content": "", "refusal": None}


def test_defaults():
    parsed = parse_chat({"messages": USER})
    assert parsed.request.model == "auto" and parsed.request.max_tokens == 0
    assert not parsed.request.HasField("temperature")
    assert not parsed.stream and not parsed.include_usage


@pytest.mark.parametrize(("body", "param", "code"), [
    ([], None, "invalid_json"),
    ({}, "messages", "missing_required_parameter"),
    ({"messages": []}, "messages", "invalid_value"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type", "unsupported_parameter"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}, "messages[0].tool_calls[0].function",
     "invalid_value"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls", "invalid_value"),
    ({"messages": [{"role": "user", "content": "x", "tool_call_id": "c1"}]}, "messages[0].tool_call_id",
     "invalid_value"),
    ({"messages": [{"role": "assistant", "function_call": {"name": "f"}}]}, "messages[0].function_call",
     "unsupported_parameter"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function", "invalid_value"),
    ({"messages": USER, "tools": [{"type": "code_interpreter"}]}, "tools[0].type", "unsupported_parameter"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     "tools[0].function.parameters", "invalid_value"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "always"},
     "tool_choice", "invalid_value"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice.function.name", "invalid_value"),
    ({"messages": USER, "tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"messages": USER, "functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"messages": USER, "n": 2}, "n", "unsupported_parameter"),
    ({"messages": USER, "stop": ["\n"]}, "stop", "unsupported_parameter"),
    ({"messages": USER, "response_format": {"type": "json_schema"}}, "response_format.type",
     "unsupported_parameter"),
    ({"messages": USER, "max_tokens": "10"}, "max_tokens", "invalid_value"),
    ({"messages": USER, "max_tokens": 2**40}, "max_tokens", "invalid_value"),
    ({"messages": USER, "temperature": True}, "temperature", "invalid_value"),
    ({"messages": USER, "metadata": {"a": 1}}, "metadata", "invalid_value"),
    ({"messages": USER, "routemesh": {"bogus": 1}}, "routemesh.bogus", "invalid_value"),
    ({"messages": USER, "routemesh": {"max_cost_usd": "1"}}, "routemesh.max_cost_usd", "invalid_value"),
])
def test_bad_requests_name_their_parameter(body, param, code):
    with pytest.raises(GatewayError) as err:
        parse_chat(body)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}


def test_unfinished_answers_are_upstream_errors():
    for status in (common_pb2.FINISH_STATUS_TRUNCATED_UPSTREAM, common_pb2.FINISH_STATUS_FAILED):
        error = broken_answer(router_pb2.Final(status=status, error="cut"))
        assert (error.status, error.type, error.code) == (502, "upstream_error", "truncated_upstream")
    assert broken_answer(router_pb2.Final(status=common_pb2.FINISH_STATUS_CANCELLED)).code == "cancelled"


class _RpcError(grpc.RpcError):
    """What a failed call raises, built from a routemesh error (or a bare code without details)."""

    def __init__(self, error: errors.RoutemeshError | None = None, code: grpc.StatusCode | None = None):
        self._status = rpc_status.to_status(error.to_status()) if error else None
        self._code = code or errors.status_code_of(error.to_status())
        self._message = error.message if error else "connection refused"

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self):
        return self._status.trailing_metadata if self._status else ()


def test_status_mapping():
    bad = http_error(_RpcError(errors.InvalidRequest("invalid routing options", field_violations=[
        ("routing.strategy", "unknown strategy 'x'")])), parse_chat({"messages": USER}).param_of)
    assert (bad.status, bad.param) == (400, "routemesh.strategy")
    assert "routemesh.strategy: unknown strategy 'x'" in bad.message
    missing = http_error(_RpcError(errors.NotFound("unknown model", reason="UNKNOWN_MODEL",
                                                   field_violations=[("model", "not a route")])))
    assert (missing.status, missing.param, missing.code) == (404, "model", "model_not_found")
    limited = http_error(_RpcError(errors.RateLimited("slow down", retry_after_s=2.5)))
    assert (limited.status, limited.code, limited.headers["retry-after"]) == (429, "rate_limit_exceeded", "3")
    budget = http_error(_RpcError(errors.BudgetExhausted("budget spent")))
    assert (budget.status, budget.type, budget.code) == (429, "insufficient_quota", "insufficient_quota")
    assert "retry-after" not in budget.headers
    no_model = http_error(_RpcError(errors.NoEligibleModel("nothing fits")))
    assert (no_model.status, no_model.code) == (400, "no_eligible_model")
    assert http_error(_RpcError(errors.UpstreamUnavailable("all failed"))).status == 503
    assert http_error(_RpcError(errors.DeadlineExceeded("too slow"))).status == 504
    router_down = http_error(_RpcError(code=grpc.StatusCode.UNAVAILABLE))
    assert (router_down.status, router_down.code) == (503, "router_unavailable")
    internal = http_error(_RpcError(errors.RoutemeshError("Traceback (most recent call last): ...")))
    assert internal.status == 500 and "Traceback" not in internal.message
