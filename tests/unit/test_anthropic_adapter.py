"""Tests for the Anthropic Messages adapter, against a local server replaying recorded wire transcripts."""

from __future__ import annotations

import pytest

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.anthropic_adapter import messages_url, request_body
from routemesh.executor.provider_base import StreamEvent
from tests.unit.replay_server import (
    MESSAGES,
    SECRET,
    TOOL_MESSAGES,
    TOOLS,
    ReplayServer,
    replay_fixtures,
    collect,
    failure,
    target,
    text_of,
    tool_calls,
)

MODEL = "claude-sonnet-4-5-20250929"


server, http = replay_fixtures("anthropic")


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
    ("rate_limit", AttemptOutcome.RATE_LIMITED, "rate_limit", 429, 7.0),
    ("unauthorized", AttemptOutcome.UPSTREAM_ERROR, "auth", 401, None),
    ("prompt_too_long", AttemptOutcome.UPSTREAM_ERROR, "context_length", 400, None),
    ("api_error", AttemptOutcome.UPSTREAM_ERROR, "server", 500, None),
    ("overloaded", AttemptOutcome.UPSTREAM_ERROR, "server", 529, None),
    ("overloaded_retry_after", AttemptOutcome.UPSTREAM_ERROR, "server", 529, 3.0),
])
async def test_http_errors(server, http, scenario, outcome, reason, status, retry_after):
    error, events = await failure(http, anthropic(server, scenario))
    assert (error.outcome, error.reason, error.http_status, error.retry_after_s) == (
        outcome, reason, status, retry_after)
    assert not error.committed and events == []
    assert SECRET not in error.message and len(error.message) <= len(f"anthropic/{MODEL}: ") + 200


async def test_error_event_after_text_is_a_truncation(server, http):
    error, events = await failure(http, anthropic(server, "overloaded_in_stream"))
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.TRUNCATED, "server", True)
    assert text_of(events) == "Aqueducts carried" and "Overloaded" in error.message


async def test_cut_stream(server, http):
    error, events = await failure(http, anthropic(server, "cut"))
    assert (error.outcome, error.reason, error.committed, error.http_status) == (
        AttemptOutcome.TRUNCATED, "connection", True, 200)
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


async def test_streamed_tool_use_and_request_shape(server, http):
    events = await collect(http, anthropic(server, "tool_use"), TOOL_MESSAGES, tools=TOOLS, tool_choice="required")
    assert text_of(events) == "Let me check both."
    # tool_index counts tool_use blocks, not content blocks; the empty first partial_json is not a piece
    assert tool_calls(events) == [("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city": "Rome"}'),
                                  ("toolu_01B7xkR2mQ4nT8vW3yZ6pLcD", "get_time", '{"timezone": "Europe/Rome"}')]
    assert [e.kind for e in events].count("tool_call") == 5
    assert events[-1] == StreamEvent("finish", finish_reason="tool_calls")
    body = server.last_body
    assert body["tools"][1] == {"name": "get_time", "description": "Local time in a timezone",
                                "input_schema": TOOLS[1]["parameters"]}
    assert body["tool_choice"] == {"type": "any"} and body["system"] == "You are a concise assistant."
    assert body["messages"] == [
        {"role": "user", "content": "Weather and time in Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Rome"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"timezone": "Europe/Rome"}}]},
        # consecutive results share one user turn, and the user's next words follow them in it
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "22C, sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "14:05"},
            {"type": "text", "text": "And tomorrow?"}]}]


async def test_cut_inside_a_tool_call_is_a_truncation(server, http):
    error, events = await failure(http, anthropic(server, "tool_use_cut"))
    assert (error.outcome, error.committed) == (AttemptOutcome.TRUNCATED, True)
    assert [e.kind for e in events] == ["delta", "tool_call", "tool_call"]
    assert tool_calls(events) == [("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city": "Ro')]


async def test_json_mode_instruction_and_named_tool_choice(server, http):
    await collect(http, anthropic(server, "success"), tools=TOOLS, tool_choice="get_time",
                  response_format="json_object")
    body = server.last_body
    assert body["system"] == "You are a concise historian.\n\nRespond with a single JSON object only."
    assert body["tool_choice"] == {"type": "tool", "name": "get_time"} and "response_format" not in body
    await collect(http, anthropic(server, "success"), MESSAGES[1:], response_format="json_object",
                  tool_choice="none")
    assert server.last_body["system"] == "Respond with a single JSON object only."
    assert not {"tools", "tool_choice"} & set(server.last_body)


def test_assistant_text_with_tool_calls_and_unparseable_arguments():
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": "Checking.",
                 "tool_calls": [{"id": "t1", "name": "f", "arguments": "{broken"}, {"id": "t2", "name": "g",
                                                                                    "arguments": ""}]}]
    body = request_body(target("http://x", "anthropic", MODEL), messages, 10, None,
                        tools=TOOLS, tool_choice="none")
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"_raw": "{broken"}},
        {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]
    assert body["tool_choice"] == {"type": "none"}
