"""A local aiohttp server replaying recorded provider responses from tests/data/transcripts/<provider>/."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from routemesh.executor.provider_base import ProviderError, ProviderTarget, StreamEvent
from routemesh.executor.providers import stream_for

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "data" / "transcripts"
SECRET = "sk-test-DO-NOT-LEAK-1234567890"
# Events end at a blank line; Gemini sends CRLF line ends, the others LF.
_EVENT = re.compile(r".*?(?:\r\n\r\n|\n\n)|.+\Z", re.S)
_KEY_IN_URL = 599


@dataclass
class Seen:
    """One request as the server received it."""

    path: str  # after the /<scenario> prefix
    query: dict[str, str]
    raw_url: str
    headers: dict[str, str]
    body: Any


class ReplayServer:
    """Serves /<scenario>/<any path> with the response index.json names for that scenario.

    An index entry: {"file": NAME, "status": 200, "headers": {...}, "cut_after_events": N}. `.sse` files
    are streamed event by event; with cut_after_events the connection is dropped after N events, with no
    end to the chunked body. A request whose URL contains the API key is refused with status 599.
    """

    def __init__(self, provider: str):
        self.dir = TRANSCRIPTS / provider
        self.index: dict[str, dict[str, Any]] = json.loads((self.dir / "index.json").read_text())
        self.seen: list[Seen] = []
        self.key_in_url = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> ReplayServer:
        app = web.Application()
        app.router.add_post("/{scenario}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def last_body(self) -> Any:
        """The JSON body of the last request received (None when it was not JSON)."""
        return self.seen[-1].body

    def base_url(self, scenario: str, suffix: str = "") -> str:
        return f"{self.url}/{scenario}{suffix}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_url = str(request.url)
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.seen.append(Seen("/" + request.match_info["tail"], dict(request.query), raw_url,
                              dict(request.headers), body))
        if SECRET in raw_url or SECRET in request.raw_path:
            self.key_in_url += 1
            return web.Response(status=_KEY_IN_URL, text="API key in the URL")
        spec = self.index[request.match_info["scenario"]]
        path = self.dir / spec["file"]
        status, headers = spec.get("status", 200), dict(spec.get("headers", {}))
        if path.suffix == ".json":
            headers.setdefault("content-type", "application/json; charset=utf-8")
            return web.Response(status=status, headers=headers, body=path.read_bytes())
        headers.setdefault("content-type", "text/event-stream")
        headers.setdefault("cache-control", "no-cache")
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        events = _EVENT.findall(path.read_bytes().decode())
        cut = spec.get("cut_after_events")
        for event in events[:cut] if cut is not None else events:
            await response.write(event.encode())
        if cut is not None:
            assert request.transport is not None
            request.transport.abort()  # mid-body: the client sees the connection drop
            return response
        await response.write_eof()
        return response


def replay_fixtures(api: str):
    """The `server` (module scope) and `http` fixtures of an adapter test module replaying `api`.

    Every test ends by checking that the key never travelled in a URL (path or query).
    """

    @pytest.fixture(scope="module")
    async def server():
        replay = await ReplayServer(api).start()
        yield replay
        await replay.close()

    @pytest.fixture
    async def http(server):
        from routemesh.executor.http import HttpClient

        server.seen.clear()
        async with HttpClient() as client:
            yield client
        assert server.key_in_url == 0
        for seen in server.seen:
            assert SECRET not in seen.raw_url and "key" not in seen.query

    return server, http


def target(base_url: str, api: str, model: str, **overrides: Any) -> ProviderTarget:
    fields: dict[str, Any] = dict(provider=api, model=f"{api}-model", upstream_model=model, base_url=base_url,
                                  api_key=SECRET, connect_timeout_s=1.0, first_token_timeout_s=2.0,
                                  between_tokens_timeout_s=2.0, api=api)
    return ProviderTarget(**{**fields, **overrides})


MESSAGES = [
    {"role": "system", "content": "You are a concise historian."},
    {"role": "user", "content": "Explain how Roman aqueducts carried water into cities"},
]


TOOLS = [
    {"name": "get_weather", "description": "Current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Local time in a timezone",
     "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}},
]
# A finished tool round: the assistant called both tools and their results follow, then the user asks on.
TOOL_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Weather and time in Rome?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"id": "call_2", "name": "get_time", "arguments": '{"timezone": "Europe/Rome"}'}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
    {"role": "user", "content": "And tomorrow?"},
]


def tool_calls(events: list[StreamEvent]) -> list[tuple[str, str, str]]:
    """The (id, name, arguments) of each streamed call, assembled from its tool_call events."""
    calls: dict[int, list[str]] = {}
    for event in events:
        if event.kind != "tool_call":
            continue
        if event.tool_index not in calls:
            assert event.tool_call_id and event.tool_name, "the first piece of a call names it"
            calls[event.tool_index] = [event.tool_call_id, event.tool_name, ""]
        else:
            assert not event.tool_call_id and not event.tool_name, "later pieces carry only arguments"
        calls[event.tool_index][2] += event.arguments_fragment
    assert sorted(calls) == list(range(len(calls)))
    return [(i, n, a) for i, n, a in (calls[k] for k in sorted(calls))]


async def collect(http, tgt: ProviderTarget, messages=MESSAGES, **kwargs) -> list[StreamEvent]:
    kwargs = {"max_tokens": 64, "temperature": 0.3, **kwargs}
    return [event async for event in stream_for(tgt.api)(http, tgt, messages, **kwargs)]


async def failure(http, tgt: ProviderTarget, messages=MESSAGES) -> tuple[ProviderError, list[StreamEvent]]:
    events: list[StreamEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in stream_for(tgt.api)(http, tgt, messages, max_tokens=64, temperature=None):
            events.append(event)
    return caught.value, events


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if e.kind == "delta")
