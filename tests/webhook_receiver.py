"""A local webhook receiver for alert tests: an aiohttp server in its own thread that records what it is sent.

It can refuse the next N deliveries (500), answer slowly, or refuse everything (down = a status), to prove retries and
that a bad receiver never slows the mesh.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic()
    status: int  # what the receiver answered


class WebhookReceiver:
    """Records every POST (answered or refused); `accepted(path)` are the bodies it answered 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail_next = 0  # refuse this many deliveries with 500
        self.down = 0  # when set, the status every delivery gets (503: down, 404: gone)
        self.delay_s = 0.0  # answer after this long
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status == 200 and (path is None or d.path == path)]

    def attempts(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        with self._lock:
            status = self.down or (500 if self.fail_next > 0 else 200)
            if status == 500:
                self.fail_next -= 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self._lock:
            self.deliveries.append(Delivery(request.path, dict(request.headers), body, time.monotonic(), status))
        return web.Response(status=status, text="ok" if status == 200 else "refused")

    def start(self) -> WebhookReceiver:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
