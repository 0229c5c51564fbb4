"""The executor's HTTP client (routemesh.executor.http) against scripted local servers: pooling, closing, errors."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.http import HttpClient, HttpConnectError, HttpError, HttpInvalidURL
from routemesh.executor.openai_adapter import ProviderError, ProviderTarget, stream_chat
from tests.unit.scripted_http import Reply, ScriptedServer, json_reply, sse

MESSAGES = [{"role": "user", "content": "Explain how Roman aqueducts carried water into cities"}]


def target_for(base_url: str, **overrides) -> ProviderTarget:
    fields = dict(provider="up", model="m", upstream_model="up-model", base_url=base_url, api_key=None,
                  connect_timeout_s=1.0, first_token_timeout_s=2.0, between_tokens_timeout_s=2.0)
    return ProviderTarget(**{**fields, **overrides})


def chunk(content=None, finish=None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def collect(http, target, **kwargs) -> list:
    return [e async for e in stream_chat(http, target, MESSAGES, max_tokens=9, temperature=None, **kwargs)]


@pytest.fixture
async def http():
    async with HttpClient() as client:
        yield client


async def test_sequential_streams_reuse_one_connection(http):
    async with ScriptedServer(lambda request: sse(chunk("a"), chunk("b", finish="stop"))) as server:
        for _ in range(3):
            events = await collect(http, target_for(f"{server.url}/v1"))
            assert events[-1].finish_reason == "stop"
        # error responses read to their end leave the connection reusable too
        server.handler = lambda request: json_reply({"error": {"message": "busy"}}, status=503,
                                                    headers={"Retry-After": "2"})
        with pytest.raises(ProviderError) as caught:
            await collect(http, target_for(f"{server.url}/v1"))
        assert caught.value.retry_after_s == 2.0 and caught.value.http_status == 503
    assert len(server.received) == 4 and len(set(server.peer_ports)) == 1, server.peer_ports
    assert server.disconnects == 0


async def test_cancelling_mid_body_closes_the_upstream_connection_promptly(http):
    # Two tokens, then the provider pauses: the consumer is cancelled while waiting for the third.
    async with ScriptedServer(lambda request: sse(chunk("a"), chunk("b"), 30.0, chunk(finish="stop"))) as server:
        received = asyncio.Event()

        async def consume() -> None:
            async for event in stream_chat(http, target_for(f"{server.url}/v1"), MESSAGES, max_tokens=9,
                                           temperature=None):
                if event.text.endswith("b"):  # "a" and "b" may arrive in one read, as one delta
                    received.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(received.wait(), 2)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.wait_disconnect(1.0), "the server never saw the client go away"
        assert time.monotonic() - cancelled_at < 0.5
        assert server.disconnects == 1
        # the abandoned connection was closed, not pooled: the next call opens a new one
        server.handler = lambda request: sse(chunk("c", finish="stop"))
        await collect(http, target_for(f"{server.url}/v1"))
    first, second = server.peer_ports
    assert first != second


async def test_stopping_early_closes_instead_of_pooling(http):
    async with ScriptedServer(lambda request: sse(chunk("a"), 30.0, chunk(finish="stop"))) as server:
        stream = stream_chat(http, target_for(f"{server.url}/v1"), MESSAGES, max_tokens=9, temperature=None)
        assert (await anext(stream)).text == "a"
        await stream.aclose()
        assert await server.wait_disconnect(1.0)


@pytest.mark.parametrize("after_done_s, reused", [(0.0, True), (1.0, False)])
async def test_body_end_after_done_is_awaited_briefly(http, after_done_s, reused):
    # [DONE] arrives, then the body's end: at once (the connection is reused) or too late (it is closed).
    reply = sse(chunk("a"), chunk(finish="stop"), "data: [DONE]\n\n", after_done_s, done=False)
    async with ScriptedServer(lambda request: reply) as server:
        started = time.monotonic()
        events = await collect(http, target_for(f"{server.url}/v1"))
        assert events[-1].finish_reason == "stop"
        assert time.monotonic() - started < 0.25 + 0.5
        await collect(http, target_for(f"{server.url}/v1"))
    first, second = server.peer_ports
    assert (first == second) == reused


async def test_post_json_body_headers_and_query(http):
    async with ScriptedServer(lambda request: json_reply({"ok": True}, headers={"X-Request-ID": "r1"})) as server:
        response = await http.post_json(f"{server.url}/v1beta/models/g:streamGenerateContent?x=1",
                                         {"text": "Grüße", "n": 1}, headers={"traceparent": "00-ab-cd-01"},
                                         params={"alt": "sse"})
        assert response.status_code == 200
        assert response.headers.get("x-request-id") == "r1" and response.headers.get("X-REQUEST-ID") == "r1"
        assert json.loads(await response.aread()) == {"ok": True}
        await response.aclose()
    seen = server.last
    assert seen.method == "POST" and seen.path == "/v1beta/models/g:streamGenerateContent"
    assert seen.query == {"x": "1", "alt": "sse"}
    assert seen.headers["content-type"] == "application/json" and seen.headers["traceparent"] == "00-ab-cd-01"
    assert seen.json() == {"text": "Grüße", "n": 1}


async def test_redirects_are_not_followed(http):
    async with ScriptedServer(lambda request: Reply(status=307, headers={"Location": "/elsewhere"})) as server:
        response = await http.post_json(f"{server.url}/v1/chat/completions", {})
        assert response.status_code == 307
        await response.aclose()
    assert len(server.received) == 1


async def test_a_body_cut_short_raises_http_error(http):
    async with ScriptedServer(lambda request: Reply(chunks=[b"data: {}\n\n"], abort=True)) as server:
        response = await http.post_json(f"{server.url}/x", {})
        with pytest.raises(HttpError):
            async for _ in response.aiter_bytes():
                pass
        await response.aclose()
        response = await http.post_json(f"{server.url}/x", {})
        with pytest.raises(HttpError):
            await response.aread()
        await response.aclose()


async def test_transport_failures_map_to_one_exception_family(http):
    with pytest.raises(HttpInvalidURL):
        await http.post_json("ftp://example.invalid/x", {})
    with pytest.raises(HttpInvalidURL):
        await http.post_json("http:///x", {})
    async with ScriptedServer(lambda request: Reply()) as server:
        url = server.url
    with pytest.raises(HttpConnectError):  # nothing listens there any more
        await http.post_json(f"{url}/x", {}, connect_timeout_s=1.0)
    assert issubclass(HttpConnectError, HttpError) and issubclass(HttpInvalidURL, HttpError)
    with pytest.raises(ValueError):
        await http.post_json(f"{url}/x", {"temperature": float("nan")})


async def test_server_closing_before_the_headers_is_an_upstream_error(http):
    async with ScriptedServer(lambda request: Reply(drop=True)) as server:
        with pytest.raises(ProviderError) as caught:
            await collect(http, target_for(f"{server.url}/v1"))
    error = caught.value
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.UPSTREAM_ERROR, "connection", False)
    assert "request failed" in error.message


async def test_a_body_cut_after_text_is_a_truncation(http):
    async with ScriptedServer(lambda request: sse(chunk("a"), done=False, abort=True)) as server:
        with pytest.raises(ProviderError) as caught:
            await collect(http, target_for(f"{server.url}/v1"))
    error = caught.value
    assert (error.outcome, error.reason, error.committed) == (AttemptOutcome.TRUNCATED, "connection", True)
    assert "stream broken" in error.message


def test_env_proxy_is_read_once_and_honours_no_proxy(monkeypatch):
    from yarl import URL

    from routemesh.executor.http import _Proxies

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.svc.cluster.local")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxies = _Proxies()
    assert proxies(URL("https://api.openai.com/v1/chat/completions")) == URL("http://proxy.internal:3128")
    assert proxies(URL("https://sim.default.svc.cluster.local/v1")) is None
    assert proxies(URL("http://api.openai.com/v1")) is None  # no HTTP_PROXY set


async def test_requests_go_through_the_env_proxy(monkeypatch):
    async with ScriptedServer(lambda request: sse(chunk("via proxy", finish="stop"))) as proxy:
        for name in ("http_proxy", "no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with HttpClient() as http:
            events = await collect(http, target_for("http://provider.invalid/v1"))
    assert events[0].text == "via proxy"
    seen = proxy.last
    # a forward proxy gets the absolute URL and the provider's Host
    assert seen.headers["host"] == "provider.invalid" and seen.path == "/v1/chat/completions"
