"""Tests for the Anthropic Messages adapter, against a local server replaying recorded wire transcripts."""

from __future__ import annotations

import httpx
import pytest

from routemesh.executor.anthropic_adapter import messages_url, request_body
from routemesh.executor.provider_base import StreamEvent
from tests.unit.replay_server import MESSAGES, SECRET, ReplayServer, collect, failure, target, text_of

MODEL = "claude-sonnet-4-5-20250929"


@pytest.fixture(scope="module")
async def server():
    replay = await ReplayServer("anthropic").start()
    yield replay
    await replay.close()


@pytest.fixture
async def http(server):
    server.seen.clear()
    async with httpx.AsyncClient() as client:
        yield client
    assert server.key_in_url == 0


def anthropic(server: ReplayServer, scenario: str, **overrides):
    return target(server.base_url(scenario), "anthropic", MODEL, **overrides)


async def test_success_text_usage_and_request_shape(server, http):
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    events = await collect(http, anthropic(server, "success"), headers=headers)
    assert text_of(events) == "Aqueducts carried water by gravity along a gentle slope."
    assert [e.kind for e in events][-2:] == ["usage", "finish"]
    # input counts the cache read too, as OpenAI's prompt_tokens does
    assert events[-2] == StreamEvent("usage", input_tokens=21 + 1024, output_tokens=12, cached_input_tokens=1024)
    assert events[-1] == StreamEvent("finish", finish_reason="stop")
    (seen,) = server.seen
    assert seen.path == "/v1/messages" and seen.query == {}
    assert seen.headers["x-api-key"] == SECRET and "Authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["traceparent"].startswith("00-0af7")
    assert seen.body == {"model": MODEL, "max_tokens": 64, "stream": True, "temperature": 0.3,
                         "system": "You are a concise historian.",
                         "messages": [{"role": "user", "content": MESSAGES[1]["content"]}]}


async def test_base_url_ending_in_v1_is_not_doubled(server, http):
    await collect(http, target(server.base_url("success", "/v1/"), "anthropic", MODEL))
    assert server.seen[0].path == "/v1/messages"
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"


async def test_thinking_blocks_are_not_answer_text(server, http):
    events = await collect(http, anthropic(server, "thinking"))
    assert text_of(events) == "17 × 23 = 391"
    # message_delta carried only output_tokens: the input count from message_start stays
    assert events[-2] == StreamEvent("usage", input_tokens=40, output_tokens=64)


@pytest.mark.parametrize("scenario, finish, usage", [
    ("max_tokens", "length", StreamEvent("usage", input_tokens=472 + 200, output_tokens=5)),
    ("refusal", "content_filter", StreamEvent("usage", input_tokens=30, output_tokens=3)),
])
async def test_stop_reasons(server, http, scenario, finish, usage):
    events = await collect(http, anthropic(server, scenario))
    assert events[-2:] == [usage, StreamEvent("finish", finish_reason=finish)]


@pytest.mark.parametrize("scenario, outcome, reason, status, retry_after", [
    ("rate_limit", "rate_limited", "rate_limit", 429, 7.0),
    ("unauthorized", "upstream_error", "auth", 401, None),
    ("prompt_too_long", "upstream_error", "context_length", 400, None),
    ("api_error", "upstream_error", "server", 500, None),
    ("overloaded", "upstream_error", "server", 529, None),
    ("overloaded_retry_after", "upstream_error", "server", 529, 3.0),
])
async def test_http_errors(server, http, scenario, outcome, reason, status, retry_after):
    error, events = await failure(http, anthropic(server, scenario))
    assert (error.outcome, error.reason, error.http_status, error.retry_after_s) == (
        outcome, reason, status, retry_after)
    assert not error.committed and events == []
    assert SECRET not in error.message and len(error.message) <= len(f"anthropic/{MODEL}: ") + 200


async def test_error_event_after_text_is_a_truncation(server, http):
    error, events = await failure(http, anthropic(server, "overloaded_in_stream"))
    assert (error.outcome, error.reason, error.committed) == ("truncated", "server", True)
    assert text_of(events) == "Aqueducts carried" and "Overloaded" in error.message


async def test_cut_stream(server, http):
    error, events = await failure(http, anthropic(server, "cut"))
    assert (error.outcome, error.reason, error.committed, error.http_status) == (
        "truncated", "connection", True, 200)
    assert text_of(events) == "Aqueducts carried water by gravity"
    assert "finish" not in [e.kind for e in events]


def test_request_body_merges_turns_and_clamps_temperature():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Use metric."},
                {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    body = request_body(target("http://x", "anthropic", MODEL), messages, 10, 1.7)
    assert body["system"] == "Be brief.\n\nUse metric." and body["temperature"] == 1.0
    assert body["messages"] == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"},
                                {"role": "user", "content": "d"}]
    assert "system" not in request_body(target("http://x", "anthropic", MODEL), messages[2:], 10, None)
