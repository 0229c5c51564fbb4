"""Every service's request bytes: undecodable ones are INVALID_ARGUMENT, oversized ones RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_status import _async as rpc_status_async
from google.rpc import error_details_pb2
from routemesh.classifier.servicer import ClassifierServicer
from routemesh.common.interceptors import DEFAULT_MAX_REQUEST_BYTES, MAX_REQUEST_BYTES
from routemesh.common.serve import Service, create_server
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2, control_pb2, executor_pb2, router_pb2, \
    telemetry_pb2

CLASSIFY = "/routemesh.v1.ClassifierService/Classify"
GOOD = classifier_pb2.ClassifyRequest(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="hello")])


@asynccontextmanager
async def raw_classify() -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable]:
    """Classify on a server started in this event loop, sending bytes as given (no client-side checks)."""
    service = Service(name="classifier", grpc_services=["routemesh.v1.ClassifierService"],
                      register=lambda server: classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(
                          ClassifierServicer(), server))
    running = await create_server(service, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel.unary_unary(CLASSIFY, request_serializer=lambda data: data,
                                      response_deserializer=classifier_pb2.ClassifyResponse.FromString)
    finally:
        await running.server.stop(None)


async def _status(call: grpc.aio.UnaryUnaryCall) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = await rpc_status_async.from_call(call)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and any(d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR))
    return raised.value.code(), raised.value.details(), info.reason


@pytest.mark.parametrize(("payload", "why"), [
    (GOOD.SerializeToString().replace(b"hello", b"hel\xffo"), "String field had bad UTF-8"),
    (b"\xff\xff\xff", "Wire format was corrupt"),
])
async def test_undecodable_requests_are_invalid_argument_not_unknown(payload: bytes, why: str) -> None:
    async with raw_classify() as classify:
        code, details, reason = await _status(classify(payload, timeout=5))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_MESSAGE")
        assert details == f"the request message does not decode: {why}"
        # The server goes on serving.
        assert (await classify(GOOD.SerializeToString(), timeout=5)).features.input_tokens > 0


async def test_a_request_above_its_methods_limit_is_refused_before_it_is_parsed(monkeypatch) -> None:
    # Classify's real limit is the transport's (64 MiB, refused by grpc itself); a small one shows the check.
    monkeypatch.setitem(MAX_REQUEST_BYTES, CLASSIFY, 4096)
    big = classifier_pb2.ClassifyRequest(messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="a" * 5000)])
    async with raw_classify() as classify:
        code, details, reason = await _status(classify(big.SerializeToString(), timeout=5))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE")
        assert details == f"the request is {big.ByteSize():,} bytes; routemesh.v1.ClassifierService/Classify " \
                          "accepts at most 4,096"
        assert (await classify(GOOD.SerializeToString(), timeout=5)).features.input_tokens > 0


def test_every_limit_names_a_real_method_and_small_messages_get_small_limits() -> None:
    methods = {f"/{service.full_name}/{method.name}"
               for module in (classifier_pb2, control_pb2, executor_pb2, router_pb2, telemetry_pb2)
               for service in module.DESCRIPTOR.services_by_name.values() for method in service.methods}
    assert set(MAX_REQUEST_BYTES) <= methods
    assert MAX_REQUEST_BYTES["/routemesh.v1.TelemetryService/WatchSnapshot"] < DEFAULT_MAX_REQUEST_BYTES
    assert MAX_REQUEST_BYTES["/routemesh.v1.RouterService/Chat"] == max(MAX_REQUEST_BYTES.values())


@pytest.mark.parametrize(("field", "value"), [("max_cost_usd", float("nan")), ("max_cost_usd", float("inf")),
                                              ("max_cost_usd", -1.0), ("latency_target_ms", float("nan")),
                                              ("latency_target_ms", float("inf")), ("latency_target_ms", 0.0)])
def test_routing_options_must_be_finite(field: str, value: float) -> None:
    from routemesh.common.errors import InvalidRequest
    from routemesh.common.policy import load_default_policy_text, parse_policy
    from routemesh.router.decision.compiled import RoutingPolicy
    from routemesh.router.decision.filters import RoutingFeatures, RoutingOptionsView
    from routemesh.router.decision.planner import plan_request

    policy = RoutingPolicy(parse_policy(load_default_policy_text()))
    with pytest.raises(InvalidRequest) as raised:
        plan_request(policy, RoutingFeatures(input_tokens=10), "auto", 0, {}, {},
                     options=RoutingOptionsView(**{field: value}))
    assert [f for f, _ in raised.value.field_violations] == [f"routing.{field}"]


@pytest.mark.parametrize(("text", "problem"), [
    ('{"type": "object", "properties": {"city": {"type": "string"}}}', ""),
    ("true", ""),
    ('{"type": 12}', "not a valid JSON Schema at type: 12 is not valid under any of the given schemas"),
    ('{"properties": {"a": {"minLength": -1}}}', "not a valid JSON Schema at properties/a/minLength"),
    ("[1, 2]", "must be a JSON Schema: an object (or true/false)"),
    ("{not json", "must be a JSON Schema as JSON text"),
    ("[" * 100_000, "nested too deeply to read"),
    ('{"a": "' + "x" * 300_000 + '"}', "longer than 262,144 characters"),
])
def test_tool_parameters_must_be_a_json_schema(text: str, problem: str) -> None:
    from routemesh.router.request import schema_problem

    found = schema_problem(text)
    assert found.startswith(problem) if problem else found == ""


def test_an_error_lists_the_first_problems_and_counts_the_rest() -> None:
    from routemesh.common.errors import MAX_FIELD_VIOLATIONS, InvalidRequest

    error = InvalidRequest("x" * 10_000, field_violations=[(f"messages[{i}].role", "must be set") for i in range(10**5)])
    assert len(error.field_violations) == MAX_FIELD_VIOLATIONS + 1
    assert error.field_violations[-1] == ("", f"{10**5 - MAX_FIELD_VIOLATIONS:,} more problem(s) not listed")
    assert error.message.endswith("(8,000 more characters)")
    assert error.to_status().ByteSize() < 4096
