"""TracedChannel against a real gRPC server: a CLIENT span per call with its status, trace context, the deadline."""

from __future__ import annotations

import asyncio
import contextvars
import json

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from routemesh.common import channels
from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.watch import WatchStream
from routemesh.v1 import control_pb2

SERVICE = "routemesh.test.Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    metadata = dict(context.invocation_metadata())
    return json.dumps({"remaining": context.time_remaining(), "traceparent": metadata.get("traceparent", "")}).encode()


async def _ticks(request: bytes, context: grpc.aio.ServicerContext):
    for i in range(int(request)):
        yield str(i).encode()


@pytest.fixture
async def server_port():
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Ticks": grpc.unary_stream_rpc_method_handler(_ticks),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(channels, "tracer", lambda: provider.get_tracer("test"))
    return exporter


async def test_each_call_gets_a_client_span_and_sends_its_trace_context(server_port, spans):
    channel = channels.open_channel(f"127.0.0.1:{server_port}")
    try:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        reply = json.loads(await echo(b"hi", timeout=5))
        with pytest.raises(grpc.aio.AioRpcError):
            await echo(b"fail", timeout=5)
        ticks = [t async for t in channel.unary_stream(f"/{SERVICE}/Ticks")(b"3", timeout=5)]
    finally:
        await channel.close()
    assert ticks == [b"0", b"1", b"2"]
    await asyncio.sleep(0.05)  # done callbacks run on the loop
    ok, failed, stream = spans.get_finished_spans()
    assert ok.name == f"{SERVICE}/Echo" and ok.kind.name == "CLIENT"
    assert ok.attributes["rpc.method"] == "Echo" and ok.attributes["rpc.grpc.status_code"] == 0
    assert reply["traceparent"].split("-")[2] == format(ok.context.span_id, "016x")
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["rpc.grpc.status_code"] == 9
    assert stream.name == f"{SERVICE}/Ticks" and stream.status.status_code == StatusCode.UNSET


async def test_a_call_made_while_serving_gets_the_callers_remaining_time(server_port, spans):
    channel = channels.open_channel(f"127.0.0.1:{server_port}")
    echo = channel.unary_unary(f"/{SERVICE}/Echo")

    async def serving() -> float:
        channels.set_serving_deadline(0.5)  # what the server interceptor does for each RPC
        return json.loads(await echo(b"hi", timeout=10))["remaining"]

    try:
        remaining = await asyncio.create_task(serving(), context=contextvars.copy_context())
        unbounded = json.loads(await echo(b"hi", timeout=10))["remaining"]
    finally:
        await channel.close()
    assert 0.3 < remaining <= 0.5 - channels.DEADLINE_MARGIN_S + 0.01
    assert unbounded > 9, "a task serving no RPC keeps its own timeout"


def test_call_timeout_without_a_serving_deadline_is_the_calls_own():
    assert channels.call_timeout(3.0) == 3.0 and channels.call_timeout(None) is None


def _push(holder: PolicyHolder, version: int, text: str | None = None) -> bool:
    policy = parse_policy(text or load_default_policy_text())
    return holder.apply(control_pb2.Policy(version=version, digest=f"d{version}", policy_json=canonical_json(policy)))


def test_policy_holder_compiles_once_per_version_and_keeps_the_newest_few():
    compiled = []

    def compile(version):
        compiled.append(version.version)
        if version.version == 3:
            raise ValueError("cannot compile version 3")
        return ("compiled", version.version)

    holder = PolicyHolder(compile=compile, keep=2)
    assert _push(holder, 1) and not _push(holder, 1), "the same version twice is applied once"
    assert _push(holder, 2)
    assert not _push(holder, 3), "a version that does not compile is rejected"
    assert holder.current == ("compiled", 2) and holder.current_version.version == 2
    assert _push(holder, 4)
    assert compiled == [1, 2, 3, 4]
    assert holder.get(4, "d4") == ("compiled", 4) and holder.get(2, "d2") == ("compiled", 2)
    assert holder.get(1, "d1") is None, "only the newest two are kept"
    assert holder.get(2, "other digest") is None


async def test_watch_stream_reconnects_after_the_server_goes_away(spans):
    received: list[bytes] = []
    lost: list[grpc.StatusCode] = []
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Ticks": grpc.unary_stream_rpc_method_handler(_ticks)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    watch = WatchStream("test", f"127.0.0.1:{port}",
                        lambda channel: channel.unary_stream(f"/{SERVICE}/Ticks")(b"2", wait_for_ready=True),
                        received.append, lost.append)
    watch.start()
    try:
        for _ in range(100):
            if len(received) >= 4:  # the stream ended after two and was opened again
                break
            await asyncio.sleep(0.05)
        assert received[:4] == [b"0", b"1", b"0", b"1"]
    finally:
        await watch.stop()
        await server.stop(0)


async def test_a_channel_without_calls_goes_idle_and_its_next_call_reconnects(server_port, spans, monkeypatch):
    # grpc's shortest idle timeout is a second; the services' is CALL_IDLE_MS.
    options = [(name, 1_000 if name == "grpc.client_idle_timeout_ms" else value)
               for name, value in channels.CHANNEL_OPTIONS]
    assert ("grpc.client_idle_timeout_ms", channels.CALL_IDLE_MS) in channels.CHANNEL_OPTIONS
    monkeypatch.setattr(channels, "CHANNEL_OPTIONS", options)
    channel = channels.open_channel(f"127.0.0.1:{server_port}")
    try:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        assert json.loads(await echo(b"hi", timeout=5))
        assert channel.channel.get_state() == grpc.ChannelConnectivity.READY
        deadline = asyncio.get_running_loop().time() + 10
        while channel.channel.get_state() != grpc.ChannelConnectivity.IDLE:  # connections closed: no timers
            assert asyncio.get_running_loop().time() < deadline, "the channel never went idle"
            await asyncio.sleep(0.1)
        assert json.loads(await echo(b"again", timeout=5))  # reconnects by itself
        assert channel.channel.get_state() == grpc.ChannelConnectivity.READY
    finally:
        await channel.close()
