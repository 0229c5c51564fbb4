"""Tests for Azure OpenAI (the OpenAI adapter with Azure's quirks) and the provider adapter registry."""

from __future__ import annotations

import pytest

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor import anthropic_adapter, gemini_adapter, openai_adapter
from routemesh.executor.http import HttpClient
from routemesh.executor.provider_base import StreamEvent
from routemesh.executor.providers import ADAPTERS, QUIRKS, stream_for
from tests.unit.replay_server import (MESSAGES, SECRET, ReplayServer, collect, failure, replay_fixtures, target,
                                     text_of)

DEPLOYMENT = "gpt4o-prod"


server, http = replay_fixtures("azure_openai")


def azure(server: ReplayServer, scenario: str, **overrides):
    return target(server.base_url(scenario), "azure_openai", DEPLOYMENT, **overrides)


async def test_success_deployment_url_api_key_header_and_usage_details(server, http):
    events = await collect(http, azure(server, "success"))
    assert text_of(events) == "Aqueducts carried water by gravity."
    assert events[-2:] == [StreamEvent("usage", input_tokens=1310, output_tokens=7, cached_input_tokens=1152),
                           StreamEvent("finish", finish_reason="stop")]
    (seen,) = server.seen
    assert seen.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == SECRET and "Authorization" not in seen.headers
    # the deployment in the URL picks the model; the body carries none
    assert seen.body == {"messages": MESSAGES, "max_tokens": 64, "temperature": 0.3, "stream": True,
                         "stream_options": {"include_usage": True}}


async def test_api_version_and_base_url_forms(server, http):
    await collect(http, azure(server, "success", api_version="2025-04-01-preview"))
    await collect(http, target(server.base_url("success", "/openai/"), "azure_openai", DEPLOYMENT))
    await collect(http, azure(server, "success", api_version="v1"))
    dated, rooted, v1 = server.seen
    assert dated.query == {"api-version": "2025-04-01-preview"}
    assert rooted.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert (v1.path, v1.query, v1.body["model"]) == ("/openai/v1/chat/completions", {}, DEPLOYMENT)


async def test_content_filter_finish_and_reasoning_tokens(server, http):
    events = await collect(http, azure(server, "content_filter"))
    assert text_of(events) == "Step one:"
    assert events[-2:] == [StreamEvent("usage", input_tokens=40, output_tokens=250, reasoning_tokens=192),
                           StreamEvent("finish", finish_reason="content_filter")]


@pytest.mark.parametrize("scenario, outcome, reason, status, retry_after", [
    ("rate_limit", AttemptOutcome.RATE_LIMITED, "rate_limit", 429, 5.782),  # retry-after-ms is the finer of the two
    ("unauthorized", AttemptOutcome.UPSTREAM_ERROR, "auth", 401, None),
    ("context_length", AttemptOutcome.UPSTREAM_ERROR, "context_length", 400, None),
    ("prompt_filtered", AttemptOutcome.UPSTREAM_ERROR, "content_policy", 400, None),
    ("deployment_not_found", AttemptOutcome.UPSTREAM_ERROR, "not_found", 404, None),
    ("internal", AttemptOutcome.UPSTREAM_ERROR, "server", 500, None),
])
async def test_http_errors(server, http, scenario, outcome, reason, status, retry_after):
    error, events = await failure(http, azure(server, scenario))
    assert (error.outcome, error.reason, error.http_status, error.retry_after_s) == (
        outcome, reason, status, retry_after)
    assert not error.committed and events == []
    assert SECRET not in error.message


async def test_cut_stream(server, http):
    error, events = await failure(http, azure(server, "cut"))
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.TRUNCATED, "connection", True)
    assert text_of(events) == "Aqueducts carried"


def test_openai_error_reasons():
    reason = openai_adapter.error_reason
    assert reason(400, {"error": {"message": "This model's maximum context length is 8192 tokens.",
                                  "type": "invalid_request_error", "code": None}}) == "context_length"
    assert reason(400, {"error": {"message": "Your request was rejected as a result of our safety system.",
                                  "type": "invalid_request_error", "code": "content_policy_violation"}}) == (
        "content_policy")
    assert reason(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}) == "auth"
    assert reason(403, None) == "auth"
    assert reason(429, {"error": {"message": "quota", "code": "insufficient_quota"}}) == "rate_limit"
    assert reason(502, b"<html>Bad gateway</html>") == "server"
    assert reason(400, {"error": {"message": "Invalid value for 'temperature'"}}) == ""
    assert reason(0, {"error": {"message": "overloaded mid-stream"}}) == "server"


async def test_registry_and_unknown_api():
    assert ADAPTERS["openai"] is openai_adapter.stream_chat and stream_for("openai") is openai_adapter.stream_chat
    assert stream_for("anthropic") is anthropic_adapter.stream_chat
    assert stream_for("gemini") is gemini_adapter.stream_chat
    assert stream_for("azure_openai").keywords == {"quirks": QUIRKS["azure_openai"]}
    async with HttpClient() as http:
        error, _ = await failure(http, target("http://127.0.0.1:9", "bedrock", "m"))
    assert error.outcome == AttemptOutcome.CONFIG_ERROR and "bedrock" in error.message
