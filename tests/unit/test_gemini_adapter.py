"""Tests for the Gemini adapter, against a local server replaying recorded wire transcripts."""

from __future__ import annotations

import pytest

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.gemini_adapter import request_body, stream_url
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

MODEL = "gemini-2.5-flash"


server, http = replay_fixtures("gemini")


def gemini(server: ReplayServer, scenario: str, **overrides):
    return target(server.base_url(scenario), "gemini", MODEL, **overrides)


async def test_success_text_usage_and_request_shape(server, http):
    events = await collect(http, gemini(server, "success"), headers={"traceparent": "00-0af7-b7ad-01"})
    assert text_of(events) == "Aqueducts carried water by gravity along a gentle slope."
    # output counts the thinking too (as OpenAI's completion_tokens does); the last chunk's usage wins
    assert events[-2:] == [
        StreamEvent("usage", input_tokens=1290, output_tokens=10 + 57, cached_input_tokens=1024,
                    reasoning_tokens=57),
        StreamEvent("finish", finish_reason="stop"),
    ]
    (seen,) = server.seen
    assert seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent" and seen.query == {"alt": "sse"}
    assert seen.headers["x-goog-api-key"] == SECRET and "Authorization" not in seen.headers
    assert seen.headers["traceparent"] == "00-0af7-b7ad-01"
    assert seen.body == {
        "contents": [{"role": "user", "parts": [{"text": MESSAGES[1]["content"]}]}],
        "systemInstruction": {"parts": [{"text": "You are a concise historian."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.3},
    }


async def test_versioned_base_url_and_model_prefix(server, http):
    await collect(http, target(server.base_url("success", "/v1beta"), "gemini", f"models/{MODEL}"))
    assert server.seen[0].path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert stream_url("https://generativelanguage.googleapis.com/", "gemini-2.0-flash") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent")


@pytest.mark.parametrize("scenario, text, finish, usage", [
    ("max_tokens", "Once upon a time", "length", StreamEvent("usage", input_tokens=9, output_tokens=5)),
    ("safety", "Here is how", "content_filter", StreamEvent("usage", input_tokens=14, output_tokens=3)),
    ("prompt_blocked", "", "content_filter", StreamEvent("usage", input_tokens=11)),
])
async def test_finish_reasons(server, http, scenario, text, finish, usage):
    events = await collect(http, gemini(server, scenario))
    assert text_of(events) == text
    assert events[-2:] == [usage, StreamEvent("finish", finish_reason=finish)]


@pytest.mark.parametrize("scenario, outcome, reason, status, retry_after", [
    ("rate_limit", AttemptOutcome.RATE_LIMITED, "rate_limit", 429, 31.0),
    ("api_key_invalid", AttemptOutcome.UPSTREAM_ERROR, "auth", 400, None),
    ("unauthenticated", AttemptOutcome.UPSTREAM_ERROR, "auth", 401, None),
    ("context_too_long", AttemptOutcome.UPSTREAM_ERROR, "context_length", 400, None),
    ("not_found", AttemptOutcome.UPSTREAM_ERROR, "not_found", 404, None),
    ("internal", AttemptOutcome.UPSTREAM_ERROR, "server", 500, None),
    ("overloaded", AttemptOutcome.UPSTREAM_ERROR, "server", 503, None),
])
async def test_http_errors(server, http, scenario, outcome, reason, status, retry_after):
    error, events = await failure(http, gemini(server, scenario))
    assert (error.outcome, error.reason, error.http_status, error.retry_after_s) == (
        outcome, reason, status, retry_after)
    assert not error.committed and events == []
    assert SECRET not in error.message and f"HTTP {status}" in error.message


async def test_cut_stream(server, http):
    error, events = await failure(http, gemini(server, "cut"))
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.TRUNCATED, "connection", True)
    assert text_of(events) == "Aqueducts carried water by gravity"
    assert "finish" not in [e.kind for e in events]


def test_request_body_roles():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
                {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"},
                {"role": "user", "content": "d"}]
    body = request_body(messages, 10, None)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {"maxOutputTokens": 10}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                                {"role": "model", "parts": [{"text": "c"}]},
                                {"role": "user", "parts": [{"text": "d"}]}]
    assert "systemInstruction" not in request_body(messages[1:], 10, 0.0)


async def test_function_calls_and_request_shape(server, http):
    events = await collect(http, gemini(server, "function_call"), TOOL_MESSAGES, tools=TOOLS, tool_choice="auto")
    # calls come whole, one event each, with ids made from their position
    assert tool_calls(events) == [("call_0", "get_weather", '{"city": "Rome"}'),
                                  ("call_1", "get_time", '{"timezone": "Europe/Rome"}')]
    assert [e.kind for e in events] == ["tool_call", "tool_call", "usage", "finish"]
    assert events[-1] == StreamEvent("finish", finish_reason="tool_calls")
    body = server.last_body
    assert body["tools"] == [{"functionDeclarations": TOOLS}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Rome?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                                    {"functionCall": {"name": "get_time", "args": {"timezone": "Europe/Rome"}}}]},
        # results are matched by the name of the call their id refers to
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": "22C, sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "14:05"}}},
            {"text": "And tomorrow?"}]}]


async def test_cut_after_a_function_call_is_a_truncation(server, http):
    error, events = await failure(http, gemini(server, "function_call_cut"))
    assert (error.outcome, error.committed) == (AttemptOutcome.TRUNCATED, True)
    assert [e.kind for e in events] == ["tool_call"]


@pytest.mark.parametrize("choice, config", [
    ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ("get_time", {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
async def test_json_mode_and_tool_choice(server, http, choice, config):
    await collect(http, gemini(server, "success"), tools=TOOLS, tool_choice=choice, response_format="json_object")
    body = server.last_body
    assert body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.3,
                                        "responseMimeType": "application/json"}
    assert body["toolConfig"] == {"functionCallingConfig": config}
    await collect(http, gemini(server, "success"), response_format="text", tool_choice="auto")
    assert not {"tools", "toolConfig"} & set(server.last_body)
    assert "responseMimeType" not in server.last_body["generationConfig"]
