"""The gateway's OpenAI translation: request checks, field names, finish reasons, gRPC status mapping."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from routemesh.common import errors
from routemesh.gateway.errors import http_error
from routemesh.gateway.openai_api import GatewayError, broken_answer, parse_chat
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
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}, "messages[0].tool_calls",
     "unsupported_parameter"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
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
