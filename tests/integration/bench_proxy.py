"""A minimal OpenAI-compatible forwarding proxy, for `routemesh bench --compare-url` tests: a real process with
a pid, between the bench and its sim, as a user's proxy would be.

    python tests/integration/bench_proxy.py LISTEN_PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def main(port: int, upstream: str) -> None:
    session: aiohttp.ClientSession | None = None

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession()
        body = await request.read()
        async with session.post(upstream.rstrip("/") + "/chat/completions", data=body,
                                headers={"Content-Type": "application/json"}) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status,
                                          headers={"Content-Type": upstream_response.content_type})
            await response.prepare(request)
            async for piece in upstream_response.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
