"""The gateway's streamed path against a scripted router: bytes on the wire, keep-alive, and its SERVER span."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from routemesh.common import channels
from routemesh.common.outcomes import FinishStatus
from routemesh.gateway import server as gateway_server
from routemesh.gateway.main import start_gateway
from routemesh.v1 import common_pb2, router_pb2, router_pb2_grpc

BODY = {"model": "fast-cheap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": True,
        "stream_options": {"include_usage": True}}
TEXTS = ['Hello "there"\n', "café ☕"]


class ScriptedRouter(router_pb2_grpc.RouterServiceServicer):
    """A decision, two deltas and a final, as the router streams them."""

    async def Chat(self, request, context):  # noqa: N802 - the generated name
        yield router_pb2.ChatResponse(decision=router_pb2.Decision(
            decision_id="d1", model=request.model, provider="sim", route="r", strategy="pinned", trace_id="t"))
        for text in TEXTS:
            yield router_pb2.ChatResponse(delta=common_pb2.Delta(text=text))
        final = router_pb2.Final(status=FinishStatus.LENGTH, model=request.model, provider="sim", cost_usd=2.5e-5)
        final.usage.input_tokens, final.usage.output_tokens = 3, 16
        yield router_pb2.ChatResponse(final=final)


@pytest.fixture
async def router_address():
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    router_pb2_grpc.add_RouterServiceServicer_to_server(ScriptedRouter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(channels, "tracer", lambda: provider.get_tracer("test"))
    monkeypatch.setattr(gateway_server, "tracer", lambda: provider.get_tracer("test"))
    return exporter


def _send(writer: asyncio.StreamWriter, body: dict) -> None:
    raw = json.dumps(body).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return head, body
        body += data[:-2]


async def test_a_stream_is_relayed_with_its_last_events_in_one_piece_and_the_connection_kept(router_address, spans):
    server = await start_gateway(router_address, control_address="127.0.0.1:1", grace_s=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        _send(writer, BODY)
        head, body = await _read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"x-routemesh-decision-id: d1\r\n" in head.lower()
        events = [e for e in body.split(b"\n\n") if e]
        assert all(e.startswith(b"data: ") for e in events)
        assert events[-1] == b"data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
            {"role": "assistant", "content": TEXTS[0]}, {"content": TEXTS[1]}]
        assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
        assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 16
        assert all(c["id"] == "chatcmpl-d1" and c["model"] == "fast-cheap" for c in chunks)
        assert all(c["usage"] is None for c in chunks[:3])
        # The same connection serves the next request (keep-alive).
        _send(writer, BODY)
        head2, body2 = await _read_response(reader)
        assert head2.startswith(b"HTTP/1.1 200 OK\r\n") and body2.endswith(b"data: [DONE]\n\n")
        writer.close()
    finally:
        await server.close()
    await asyncio.sleep(0.05)
    server_spans = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    client_spans = [s for s in spans.get_finished_spans() if s.kind.name == "CLIENT"]
    assert len(server_spans) == 2 and len(client_spans) == 2
    span = server_spans[0]
    assert span.name == "POST /v1/chat/completions"
    attributes = dict(span.attributes)
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.request.model"] == "fast-cheap" and attributes["gen_ai.request.max_tokens"] == 16
    assert attributes["routemesh.gateway.stream"] is True
    assert attributes["routemesh.decision.id"] == "d1"
    assert attributes["gen_ai.usage.output_tokens"] == 16
    assert client_spans[0].parent.span_id == span.context.span_id
