"""Tests for the OpenAI-compatible streaming client, against the real simulator and scripted local servers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from types import SimpleNamespace
from email.utils import format_datetime
from datetime import datetime, timedelta, UTC

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.http import HttpClient
from routemesh.executor.openai_adapter import (
    ProviderError,
    ProviderTarget,
    StreamEvent,
    _sse_completion,
    parse_retry_after,
    stream_chat,
)
from routemesh.executor.provider_base import StreamReader
from routemesh.executor.sse import SSEEvent
from routemesh.sim import start_sim
from tests.unit import replay_server
from tests.unit.scripted_http import Reply, ScriptedServer, json_reply, sse

MESSAGES = [{"role": "user", "content": "Explain how Roman aqueducts carried water into cities"}]
SECRET = "sk-test-DO-NOT-LEAK-1234567890"


@pytest.fixture(scope="module")
async def sim():
    server = await start_sim(time_scale=0)
    yield server
    await server.close()


@pytest.fixture
async def client(sim):
    sim.state.reset()
    async with HttpClient() as http:
        yield http


def target_for(base_url: str, model: str = "sim-fast", **overrides) -> ProviderTarget:
    fields = dict(provider="sim", model="fast-cheap", upstream_model=model, base_url=base_url, api_key=None,
                  connect_timeout_s=1.0, first_token_timeout_s=2.0, between_tokens_timeout_s=2.0)
    return ProviderTarget(**{**fields, **overrides})


async def collect(client, target, messages=MESSAGES, max_tokens=256, **kwargs) -> list[StreamEvent]:
    stream = stream_chat(client, target, messages, max_tokens=max_tokens, temperature=0.2, **kwargs)
    return [event async for event in stream]


async def failure(client, target, **kwargs) -> tuple[ProviderError, list[StreamEvent]]:
    events: list[StreamEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in stream_chat(client, target, MESSAGES, max_tokens=256, temperature=None, **kwargs):
            events.append(event)
    return caught.value, events


@pytest.fixture
async def http():
    async with HttpClient() as client:
        yield client


def sse_response(*payloads, status=200, done=True) -> Reply:
    return sse(*payloads, status=status, done=done)


def chunk(content=None, finish=None, usage=None) -> dict:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"object": "chat.completion.chunk", "choices": [choice]}
    if usage is not None:
        body = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
    return body


async def test_success_streams_deltas_usage_then_one_finish(client, sim):
    events = await collect(client, target_for(sim.url))
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["usage", "finish"] and kinds.count("finish") == 1
    deltas = [e.text for e in events if e.kind == "delta"]
    assert deltas and all(deltas)
    usage, finish = events[-2], events[-1]
    # The chunks one read brought are one delta, which counts them.
    assert usage.output_tokens == sum(e.chunks for e in events if e.kind == "delta") and usage.input_tokens > 0
    assert finish.finish_reason == "stop"
    whole = await client.post_json(f"{sim.url}/chat/completions", {"model": "sim-fast", "messages": MESSAGES})
    assert "".join(deltas) == json.loads(await whole.aread())["choices"][0]["message"]["content"]
    await whole.aclose()


async def test_same_request_same_text(client, sim):
    first = await collect(client, target_for(sim.url, "sim-balanced"))
    second = await collect(client, target_for(sim.url, "sim-balanced"))
    assert first == second


async def test_length_finish(client, sim):
    events = await collect(client, target_for(sim.url), max_tokens=5)
    assert sum(e.chunks for e in events if e.kind == "delta") == 5
    assert events[-1].finish_reason == "length" and events[-2].output_tokens == 5


@pytest.mark.parametrize(
    "fault, outcome, committed, status",
    [
        ("500", AttemptOutcome.UPSTREAM_ERROR, False, 500),
        ("503", AttemptOutcome.UPSTREAM_ERROR, False, 503),
        ("429", AttemptOutcome.RATE_LIMITED, False, 429),
        ("cut", AttemptOutcome.TRUNCATED, True, 200),
        ("malformed", AttemptOutcome.TRUNCATED, True, 200),
        ("stall", AttemptOutcome.TIMEOUT, True, 200),
        ("hang", AttemptOutcome.TIMEOUT, False, 0),
        ("slow-first-token", AttemptOutcome.TIMEOUT, False, 200),
    ],
)
async def test_faults_map_to_outcomes(client, sim, fault, outcome, committed, status):
    target = target_for(sim.url, first_token_timeout_s=0.3, between_tokens_timeout_s=0.2)
    headers = {"x-sim-fault": fault, "x-sim-delay-scale": "1" if fault == "slow-first-token" else "0"}
    started = time.monotonic()
    error, events = await failure(client, target, headers=headers)
    assert (error.outcome, error.committed, error.http_status) == (outcome, committed, status)
    assert sum(e.chunks for e in events if e.kind == "delta") == (3 if committed else 0)
    assert "finish" not in [e.kind for e in events]
    assert time.monotonic() - started < 3.0
    if fault == "429":
        assert error.retry_after_s == 1.0
    if fault == "500":
        assert "simulated" in error.message and len(error.message) <= 220


async def test_no_done_is_a_complete_answer(client, sim):
    events = await collect(client, target_for(sim.url), headers={"x-sim-fault": "no-done"})
    assert events[-1] == StreamEvent("finish", finish_reason="stop")


async def test_unknown_model_is_upstream_error_with_provider_message(client, sim):
    error, _ = await failure(client, target_for(sim.url, "sim-nope"))
    assert (error.outcome, error.http_status, error.committed) == (AttemptOutcome.UPSTREAM_ERROR, 404, False)
    assert "does not exist" in error.message


async def test_total_timeout(client, sim):
    target = target_for(sim.url, "sim-strong")
    started = time.monotonic()
    error, events = await failure(client, target, headers={"x-sim-delay-scale": "1"}, total_timeout_s=0.6)
    assert error.outcome == AttemptOutcome.TIMEOUT and error.committed and events
    assert 0.55 <= time.monotonic() - started < 2.5


async def test_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpClient() as http:
        error, _ = await failure(http, target_for(f"http://127.0.0.1:{port}/v1"))
    assert error.outcome == AttemptOutcome.CONNECT_ERROR and error.reason == "connection" and not error.committed


async def test_connect_timeout_is_a_connect_error(http):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            started = time.monotonic()
            error, _ = await failure(http, target_for(f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.2,
                                                      first_token_timeout_s=5.0))
            assert time.monotonic() - started < 1.5
        finally:
            for filler in fillers:
                filler.close()
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.CONNECT_ERROR, "connection", False)


async def test_no_free_pooled_connection_within_the_connect_timeout_is_a_connect_error():
    async with ScriptedServer(lambda request: sse(chunk("a"), 5.0)) as server, HttpClient(max_connections=1) as http:
        holder = stream_chat(http, target_for(f"{server.url}/v1"), MESSAGES, max_tokens=9, temperature=None)
        assert (await anext(holder)).kind == "delta"  # holds the only connection
        try:
            started = time.monotonic()
            error, _ = await failure(http, target_for(f"{server.url}/v1", connect_timeout_s=0.2))
            assert time.monotonic() - started < 1.5
        finally:
            await holder.aclose()
    assert (error.outcome, error.reason) == (AttemptOutcome.CONNECT_ERROR, "connection")


@pytest.mark.parametrize("base_url", ["ftp://example.invalid/v1", "not a url", "http://[::1/v1", "http:///v1"])
async def test_invalid_base_url_is_config_error(client, base_url):
    error, _ = await failure(client, target_for(base_url))
    assert error.outcome == AttemptOutcome.CONFIG_ERROR and "invalid provider URL" in error.message


async def test_request_shape_and_auth_header(http):
    async with ScriptedServer(lambda request: sse_response(chunk("hi"), chunk(finish="stop"))) as server:
        headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        keyed_target = target_for(f"{server.url}/v1/", api_key=SECRET)
        await collect(http, keyed_target, headers=headers, max_tokens=7)
        await collect(http, target_for(f"{server.url}/v1"))
    keyed, anonymous = server.received
    assert (keyed.method, keyed.url) == ("POST", f"{server.url}/v1/chat/completions")
    assert keyed.headers["authorization"] == f"Bearer {SECRET}" and "authorization" not in anonymous.headers
    assert keyed.headers["traceparent"].startswith("00-0af7")
    assert keyed.headers["content-type"] == "application/json"
    assert keyed.headers["accept"] == "text/event-stream"
    body = keyed.json()
    assert body == {"model": "sim-fast", "messages": MESSAGES, "max_tokens": 7, "stream": True,
                    "stream_options": {"include_usage": True}, "temperature": 0.2}


async def test_usage_in_finish_chunk_and_content_filter(http):
    final = chunk(finish="content_filter") | {"usage": {"prompt_tokens": 9, "completion_tokens": 1}}
    async with ScriptedServer(lambda request: sse_response(": keep-alive\n\n", chunk("x"), final)) as server:
        events = await collect(http, target_for(f"{server.url}/v1"))
    assert events == [StreamEvent("delta", text="x"), StreamEvent("usage", input_tokens=9, output_tokens=1),
                      StreamEvent("finish", finish_reason="content_filter")]


@pytest.mark.parametrize(
    "payloads, done, outcome, committed",
    [
        ([chunk("a"), chunk("b")], True, AttemptOutcome.TRUNCATED, True),  # [DONE] without a finish reason
        ([chunk("a")], False, AttemptOutcome.TRUNCATED, True),  # body ends without a finish reason
        ([], True, AttemptOutcome.UPSTREAM_ERROR, False),
        (["data: {oops\n\n"], True, AttemptOutcome.UPSTREAM_ERROR, False),
        ([chunk("a"), {"error": {"message": "overloaded mid-stream"}}], True, AttemptOutcome.TRUNCATED, True),
    ],
)
async def test_incomplete_streams(http, payloads, done, outcome, committed):
    async with ScriptedServer(lambda request: sse_response(*payloads, done=done)) as server:
        error, _ = await failure(http, target_for(f"{server.url}/v1"))
    assert (error.outcome, error.committed) == (outcome, committed)


async def test_non_streaming_json_answer_is_accepted(http):
    body = {"choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    async with ScriptedServer(lambda request: json_reply(body)) as server:
        events = await collect(http, target_for(f"{server.url}/v1"))
    assert [e.kind for e in events] == ["delta", "usage", "finish"] and events[0].text == "whole"


async def test_error_messages_never_leak_key_or_prompt(http):
    def handler(request):
        key, prompt = request.headers["authorization"], MESSAGES[0]["content"]
        echoed = f"bad key {key} for prompt {prompt} " + "x" * 400
        return json_reply({"error": {"message": echoed, "type": "invalid_request_error"}}, status=401)

    async with ScriptedServer(handler) as server:
        target = target_for(f"{server.url}/v1", api_key=SECRET)
        error, _ = await failure(http, target)
    assert error.outcome == AttemptOutcome.UPSTREAM_ERROR and error.http_status == 401
    for text in (error.message, str(error), repr(error), repr(target), str(target)):
        assert SECRET not in text and MESSAGES[0]["content"] not in text
    assert len(error.message) <= 220 and "***" in error.message


@pytest.mark.parametrize("headers", [
    dict,
    # what a response carries: case-insensitive, names as the server spelled them
    lambda fields: CIMultiDictProxy(CIMultiDict({name.title(): value for name, value in fields.items()})),
])
def test_parse_retry_after_forms(headers):
    assert parse_retry_after(headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(headers({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    assert parse_retry_after(headers({"retry-after": "soon"})) is None
    assert parse_retry_after(headers({})) is None
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(headers({"retry-after": format_datetime(when, usegmt=True)}))
    assert seconds is not None and 25 <= seconds <= 31


async def test_early_close_releases_the_upstream_stream(client, sim):
    target = target_for(sim.url, "sim-strong")
    stream = stream_chat(client, target, MESSAGES, max_tokens=256, temperature=None,
                         headers={"x-sim-delay-scale": "1"})
    first = await anext(stream)
    assert first.kind == "delta"
    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 1.0
    for _ in range(50):
        if sim.state.outcomes["sim-strong"]["disconnected"]:
            break
        await asyncio.sleep(0.02)
    assert sim.state.outcomes["sim-strong"]["disconnected"] == 1


async def test_caller_cancellation_propagates(client, sim):
    async def consume():
        return await collect(client, target_for(sim.url, "sim-strong"), headers={"x-sim-delay-scale": "1"})

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_100_concurrent_streams_complete(sim):
    async with HttpClient(max_connections=100) as http:
        results = await asyncio.gather(*(
            collect(http, target_for(sim.url), messages=[{"role": "user", "content": f"q{i}"}],
                    headers={"x-sim-delay-scale": "0.1"})
            for i in range(100)
        ))
    assert all(events[-1].kind == "finish" and events[-1].finish_reason == "stop" for events in results)


@pytest.fixture(scope="module")
async def replay():
    server = await replay_server.ReplayServer("openai").start()
    yield server
    assert server.key_in_url == 0
    await server.close()


async def test_streamed_tool_calls_interleaved_and_request_shape(replay):
    replay.seen.clear()
    async with HttpClient() as http:
        events = await replay_server.collect(
            http, replay_server.target(replay.base_url("tool_calls", "/v1"), "openai", "gpt-4o"),
            replay_server.TOOL_MESSAGES, tools=replay_server.TOOLS, tool_choice="auto")
    assert replay_server.tool_calls(events) == [("call_Wx3fA9kQ2pLm", "get_weather", '{"city": "Rome"}'),
                                                ("call_Tz8bN4vR1sYe", "get_time", '{"timezone": "Europe/Rome"}')]
    # one event per streamed piece, in the order the pieces of the two calls interleave
    assert [(e.tool_index, e.arguments_fragment) for e in events if e.kind == "tool_call"] == [
        (0, ""), (0, '{"city"'), (1, ""), (0, ': "Rome"}'), (1, '{"timezone": '), (1, '"Europe/Rome"}')]
    assert events[-1] == StreamEvent("finish", finish_reason="tool_calls")
    body = replay.last_body
    assert body["tools"][0] == {"type": "function", "function": replay_server.TOOLS[0]}
    assert body["tool_choice"] == "auto" and "response_format" not in body
    assert body["messages"][2:5] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": '{"timezone": "Europe/Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:05"}]
    assert body["messages"][5] == replay_server.TOOL_MESSAGES[5]


async def test_cut_after_a_tool_call_piece_is_a_truncation(replay):
    tgt = replay_server.target(replay.base_url("tool_calls_cut", "/v1"), "openai", "gpt-4o")
    async with HttpClient() as http:
        error, events = await replay_server.failure(http, tgt)
    assert (error.outcome, error.committed) == (AttemptOutcome.TRUNCATED, True)
    assert [e.kind for e in events] == ["tool_call", "tool_call"]


@pytest.mark.parametrize("choice, wire", [
    ("required", "required"), ("none", "none"),
    ("get_time", {"type": "function", "function": {"name": "get_time"}}),
])
async def test_json_mode_and_named_tool_choice(replay, choice, wire):
    async with HttpClient() as http:
        tgt = replay_server.target(replay.base_url("json_object", "/v1"), "openai", "gpt-4o")
        events = await replay_server.collect(http, tgt, tools=replay_server.TOOLS, tool_choice=choice,
                                             response_format="json_object")
    assert json.loads(replay_server.text_of(events)) == {"aqueduct": "Aqua Appia"}
    assert replay.last_body["response_format"] == {"type": "json_object"}
    assert replay.last_body["tool_choice"] == wire
    async with HttpClient() as http:
        await replay_server.collect(http, tgt, response_format="text", tool_choice="auto")
    # no tools: nothing about them is sent (OpenAI rejects a lone tool_choice), and text is the default
    assert not {"tools", "tool_choice", "response_format"} & set(replay.last_body)


async def test_forced_tool_call_with_stop_and_whole_completion(http):
    piece = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    forced = chunk(finish=None) | {"choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
    async with ScriptedServer(lambda request: sse_response(forced, chunk(finish="stop"))) as server:
        events = await collect(http, target_for(f"{server.url}/v1"))
    # a forced (named) tool_choice ends with "stop"; callers still learn that tools are due
    assert events == [StreamEvent("tool_call", tool_call_id="call_a", tool_name="get_time", arguments_fragment="{}"),
                      StreamEvent("finish", finish_reason="tool_calls")]
    whole = {"choices": [{"message": {"content": None, "tool_calls": [piece]}, "finish_reason": "tool_calls"}]}
    async with ScriptedServer(lambda request: json_reply(whole)) as server:
        assert await collect(http, target_for(f"{server.url}/v1")) == events


class _Batches(StreamReader):
    """A StreamReader whose network reads are given: each list is what one read completed."""

    def __init__(self, *reads: list[dict | str]):
        self.call = SimpleNamespace(scrub=lambda text: text)
        self.response = SimpleNamespace(status_code=200)
        self.committed, self.finish_reason, self.done = False, "", False
        self._reads = reads

    async def batches(self):
        for read in self._reads:
            yield [SSEEvent(data=item if isinstance(item, str) else json.dumps(item)) for item in read]


async def _events(reader: StreamReader) -> list[StreamEvent]:
    return [event async for event in _sse_completion(reader)]


async def test_the_chunks_of_one_read_are_one_delta_that_counts_them_and_keeps_the_order():
    piece = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    tool = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]}
    usage = chunk(usage={"prompt_tokens": 3, "completion_tokens": 5})
    events = await _events(_Batches(
        [chunk("a"), chunk("b"), chunk("c")],  # one read: one delta of three chunks
        [chunk("d"), tool, chunk("e")],  # a tool-call piece between: text before it goes first
        [chunk("f", finish="stop"), usage, "[DONE]", chunk("late")]))  # usage after the text; nothing after [DONE]
    assert events == [StreamEvent("delta", text="abc", chunks=3), StreamEvent("delta", text="d"),
                      StreamEvent("tool_call", tool_index=0, tool_call_id="call_1", tool_name="f",
                                  arguments_fragment="{}"),
                      StreamEvent("delta", text="e"), StreamEvent("delta", text="f"),
                      StreamEvent("usage", input_tokens=3, output_tokens=5),
                      StreamEvent("finish", finish_reason="tool_calls")]


async def test_text_read_before_a_broken_chunk_is_delivered_before_the_error():
    reader = _Batches([chunk("a"), chunk("b"), "{not json", chunk("never")])
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in _sse_completion(reader):
            seen.append(event)
    assert seen == [StreamEvent("delta", text="ab", chunks=2)]
    assert caught.value.outcome == AttemptOutcome.TRUNCATED and caught.value.committed
