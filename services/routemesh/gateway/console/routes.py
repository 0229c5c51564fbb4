"""The console's HTTP surface: GET /console (the page), /console/static/* (its script and style), /console/api/*.

Thin handlers: admit the caller (console.auth), ask the Console, answer JSON. Every answer carries a strict
Content-Security-Policy (scripts from files only, no inline script or style) and is never cached.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from aiohttp import web

from routemesh.gateway.console.console import Console
from routemesh.gateway.openai_api import GatewayError

CONSOLE = web.AppKey("console", Console)
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_DECISION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files as package data (routemesh/gateway/console/static), by name."""
    folder = resources.files("routemesh.gateway.console").joinpath("static")
    out = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in STATIC_TYPES:
            out[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
    return out


def json_text(body: Any) -> str:
    """JSON whose strings cannot close a tag or start an entity even if sniffed as HTML (<, > and & escaped)."""
    return json.dumps(body).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json_text(body), content_type="application/json",
                        headers=SECURITY_HEADERS)


async def _admitted(request: web.Request) -> tuple[Console, list[tuple[str, str]]]:
    """The console and the metadata its reads carry; GatewayError (401/503, JSON) when the caller is refused."""
    console = request.app[CONSOLE]
    header = request.headers.get("Authorization", "")
    verdict = await console.auth.check(header)
    if not verdict.admitted:
        headers = {"WWW-Authenticate": 'Bearer realm="routemesh console"'} if verdict.status == 401 else {}
        raise GatewayError(verdict.status, verdict.message, type="authentication_error",
                           code="admin_required" if verdict.status == 401 else "key_store_unavailable",
                           headers={**SECURITY_HEADERS, **headers})
    return console, [("authorization", header)] if header else []


async def page(request: web.Request) -> web.Response:
    body, content_type = request.app[STATIC]["index.html"]
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)


async def static(request: web.Request) -> web.Response:
    found = request.app[STATIC].get(request.match_info["name"])
    if found is None:
        raise GatewayError(404, f"no console file {request.match_info['name']!r}", code="not_found")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)


async def session(request: web.Request) -> web.Response:
    """Whether the caller is admitted, and why a credential is needed at all (the page's sign-in check)."""
    console, _ = await _admitted(request)
    return _json({"open": console.auth.open, "locked_because": console.auth.reasons})


async def overview(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    return _json(await console.overview(metadata))


async def decisions(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 500:
        raise GatewayError(400, "limit must be a whole number from 1 to 500", param="limit", code="invalid_value")
    return _json(await console.decisions(metadata, limit))


async def decision(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    decision_id = request.match_info["decision_id"]
    if not _DECISION_ID.match(decision_id):
        raise GatewayError(400, "not a decision id", param="decision_id", code="invalid_value")
    found = await console.decision(decision_id, metadata)
    if found is None:
        raise GatewayError(404, "telemetry no longer holds that decision (it keeps the newest 500)",
                           code="decision_not_found")
    return _json(found)


async def policy(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    return _json(await console.policy(metadata))


async def alerts(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    return _json(await console.alerts(metadata))


async def ledger(request: web.Request) -> web.Response:
    console, metadata = await _admitted(request)
    return _json(await console.ledger(metadata))


STATIC = web.AppKey("console_static", dict)


def add_console(app: web.Application, console: Console) -> None:
    """Serve the console from `app` (the gateway's)."""
    app[CONSOLE] = console
    app[STATIC] = static_files()
    app.router.add_get("/console", page)
    app.router.add_get("/console/", page)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/console/api/session", session)
    app.router.add_get("/console/api/overview", overview)
    app.router.add_get("/console/api/decisions", decisions)
    app.router.add_get("/console/api/decisions/{decision_id}", decision)
    app.router.add_get("/console/api/policy", policy)
    app.router.add_get("/console/api/alerts", alerts)
    app.router.add_get("/console/api/ledger", ledger)
