"""Structure-aware fuzzing of the router's requests: whatever arrives, a clear status, and the mesh keeps serving.

Requests are built field by field (roles and numbers out of range, NaN and infinities, odd text, many
messages and tools, tool schemas that are not JSON), serialized, then sometimes damaged: unknown fields
appended, bytes flipped, cut short. Each goes to Explain and, for a share, Chat, as raw bytes.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routemesh.client import RouterClient
from routemesh.v1 import common_pb2, router_pb2

pytestmark = pytest.mark.integration
# Statuses that mean "the server did not understand what went wrong": never acceptable for any input.
UNCLEAR = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.UNAVAILABLE}
CALL_TIMEOUT_S = 20

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(float("nan")), st.just(-0.0))
text = st.one_of(st.text(max_size=200), st.text(alphabet="{}[]\":,\\ ", max_size=60), st.just(""),
                 st.just("a" * 10_000))
messages = st.lists(st.builds(common_pb2.Message, role=st.integers(-3, 7), content=text, name=text),
                    max_size=40)
tools = st.lists(st.builds(common_pb2.Tool, name=text, description=text,
                           parameters_json=st.one_of(text, st.just('{"type": "object"}'), st.just("[" * 5000))),
                 max_size=20)
routing = st.builds(router_pb2.RoutingOptions, strategy=st.one_of(text, st.sampled_from(["cost", "quality_target"])),
                    max_cost_usd=floats, latency_target_ms=floats, allow_fallback=st.booleans(), provider=text,
                    required_capabilities=st.lists(text, max_size=10))
chats = st.builds(router_pb2.ChatRequest, messages=messages, model=st.one_of(text, st.sampled_from(["auto", "strong"])),
                  max_tokens=st.integers(-2**31, 2**31 - 1), metadata=st.dictionaries(text, text, max_size=80),
                  temperature=floats, routing=routing, tools=tools, tool_choice=text,
                  response_format=st.one_of(text, st.sampled_from(["json_object", "text"])))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A serialized request, perhaps with unknown fields appended, bytes flipped, or cut short."""
    data = bytearray(draw(chats).SerializeToString())
    for _ in range(draw(st.integers(0, 3))):
        number, payload = draw(st.integers(100, 536_870_911)), draw(st.binary(max_size=300))
        data += _varint(number << 3 | 2) + _varint(len(payload)) + payload
    if data and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
    if data and draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@pytest.fixture(scope="module")
def raw_router(mesh):
    channel = grpc.insecure_channel(mesh.layout.address("router"))
    identity = {"request_serializer": lambda data: data}
    yield (channel.unary_unary("/routemesh.v1.RouterService/Explain", **identity,
                               response_deserializer=router_pb2.ExplainResponse.FromString),
           channel.unary_stream("/routemesh.v1.RouterService/Chat", **identity,
                                response_deserializer=router_pb2.ChatResponse.FromString))
    channel.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payload=damaged(), chat=st.integers(0, 4))
def test_any_request_bytes_get_a_clear_status(raw_router, payload: bytes, chat: int) -> None:
    explain, stream = raw_router
    try:
        explain(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        assert exc.code() not in UNCLEAR, f"Explain: {exc.code().name}: {exc.details()[:300]}"
        assert len(exc.details()) < 16_384, "an error's text is bounded"
    if chat == 0:  # a fifth of the inputs run as a chat too (it calls the simulated provider)
        try:
            for _ in stream(payload, timeout=CALL_TIMEOUT_S):
                pass
        except grpc.RpcError as exc:
            assert exc.code() not in UNCLEAR, f"Chat: {exc.code().name}: {exc.details()[:300]}"


def test_the_mesh_serves_a_normal_chat_after_the_fuzzing(router_address) -> None:
    with RouterClient(router_address) as client:
        result = client.complete("What is the capital of France?")
    assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE and result.text
