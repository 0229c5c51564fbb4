"""A local HTTP server that answers each request as a test scripts it, for driving the executor's HTTP client.

The test gives a handler: Received -> Reply (or an awaitable of one). A Reply is sent whole, or streamed
piece by piece with pauses between pieces (stalls for timeout tests), and may end by dropping the
connection mid-body. The server records what it received, from which client port (connection reuse), and
how many responses the client abandoned by disconnecting.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    url: str  # as the client sent it, scheme and host included
    headers: CIMultiDict[str]  # case-insensitive
    body: bytes
    peer_port: int  # the client's port: the same port twice means one reused connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to send: status, headers, then `body` whole or `chunks` one by one.

    A float in `chunks` pauses that many seconds; `abort` drops the connection after the last chunk instead
    of ending the body properly; `drop` closes the connection before sending anything at all.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: list[bytes | float] | None = None
    abort: bool = False
    drop: bool = False


Handler = Callable[[Received], "Reply | Awaitable[Reply]"]


def sse(*payloads: Any, done: bool = True, status: int = 200, headers: dict[str, str] | None = None,
        abort: bool = False, pause_s: float = 0.0) -> Reply:
    """An SSE reply, one event per payload (dicts as JSON `data:` lines, strings verbatim), then [DONE]."""
    events: list[bytes | float] = []
    for payload in payloads:
        if isinstance(payload, float):
            events.append(payload)
            continue
        events.append((f"data: {json.dumps(payload)}\n\n" if not isinstance(payload, str) else payload).encode())
        if pause_s:
            events.append(pause_s)
    if done:
        events.append(b"data: [DONE]\n\n")
    return Reply(status=status, headers={"content-type": "text/event-stream", **(headers or {})}, chunks=events,
                 abort=abort)


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, headers={"content-type": "application/json", **(headers or {})},
                 body=json.dumps(payload).encode())


class ScriptedServer:
    """Serves every path with the handler's Reply; use `async with ScriptedServer(handler) as server`."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.received: list[Received] = []
        self.disconnects = 0  # responses the client went away from before their end
        self._disconnected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that disconnects cancels its handler at once, even mid-pause.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def last(self) -> Received:
        return self.received[-1]

    @property
    def peer_ports(self) -> list[int]:
        return [r.peer_port for r in self.received]

    async def wait_disconnect(self, timeout_s: float = 1.0) -> bool:
        """True once some client disconnected mid-response, within timeout_s."""
        try:
            await asyncio.wait_for(self._disconnected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(request.method, request.path, dict(request.query), str(request.url),
                            CIMultiDict(request.headers), await request.read(), peer[1] if peer else 0)
        self.received.append(received)
        reply = self.handler(received)
        if inspect.isawaitable(reply):
            reply = await reply
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if reply.chunks is None and not reply.abort:
            return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        try:
            await response.prepare(request)
            for piece in reply.chunks or [reply.body]:
                if isinstance(piece, float):
                    await asyncio.sleep(piece)
                else:
                    await response.write(piece)
            if reply.abort:
                assert request.transport is not None
                request.transport.abort()  # mid-body: the client sees the connection drop
                return response
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.disconnects += 1
            self._disconnected.set()
            raise
        return response
