"""The gateway's aiohttp app: routes, tracing and error middleware, health, models, start and graceful stop."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from routemesh.common import semconv
from routemesh.common.channels import TracedChannel, open_channel
from routemesh.common.policy import Policy
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.tls import ReloadingSslContext, TlsFiles
from routemesh.common.tracing import tracer
from routemesh.gateway.chat import ChatHandler, error_response
from routemesh.gateway.console.console import Console, build_console
from routemesh.gateway.console.routes import add_console
from routemesh.gateway.metrics import GatewayMetrics
from routemesh.gateway.openai_api import GatewayError
from routemesh.v1 import router_pb2_grpc

if TYPE_CHECKING:  # the router's own code is imported only by a router serving HTTP itself
    from routemesh.router.http_api import LocalRouter

log = logging.getLogger(__name__)

DEFAULT_CONTROL = "127.0.0.1:50055"
DEFAULT_TELEMETRY = "127.0.0.1:50053"
HEALTH_CACHE_S = 1.0
# Long prompts are legitimate; the router accepts 64 MiB messages too.
MAX_BODY_BYTES = 64 * 1024 * 1024
# Slow clients (issue 13): how long a request's line and headers, then its body, may take to arrive, and
# how many connections may be open at once. Generous for real clients, short for one byte a second.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 4096
# A refusal is logged at most this often: under a flood, one line per connection would be a flood too.
_REFUSAL_LOG_EVERY_S = 10.0
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s")
_ROUTER_SERVICE = "routemesh.v1.RouterService"
# OpenTelemetry HTTP server conventions.
_HTTP_METHOD, _HTTP_ROUTE, _URL_PATH = "http.request.method", "http.route", "url.path"


class Gateway:
    """What the handlers share: the router channel, the watched policy, the cached router health."""

    def __init__(self, router: str | LocalRouter, control_address: str, timeout_s: float,
                 body_timeout_s: float = BODY_TIMEOUT_S):
        # A router address, or the router of this very process (router.http_api: no gRPC hop).
        self.local = None if isinstance(router, str) else router
        if self.local is None:
            # The shared channel config: Chat and Explain are retried only while nothing was received, so an
            # answer is never duplicated; keepalive notices a frozen router within seconds.
            self.channel: TracedChannel | None = open_channel(str(router))
            self.router: router_pb2_grpc.RouterServiceStub | LocalRouter = \
                router_pb2_grpc.RouterServiceStub(self.channel)
            self.health = health_pb2_grpc.HealthStub(self.channel)
        else:
            self.channel, self.router = None, self.local
        self.policy = PolicyHolder()
        self.watcher = PolicyWatcher(self.policy, control_address, "gateway")
        self.chat = ChatHandler(self.router, timeout_s, body_timeout_s)
        # The operator's console (/console), set by start_gateway.
        self.console: Console | None = None
        self.draining = False
        self.started = int(time.time())
        self._serving = False
        self._checked_at = -math.inf
        self._health_lock = asyncio.Lock()

    async def router_serving(self) -> bool:
        """Whether the router answers SERVING; one check per second however many probes ask."""
        if self.local is not None:
            return self.local.ready()
        async with self._health_lock:
            if time.monotonic() - self._checked_at < HEALTH_CACHE_S:
                return self._serving
            try:
                reply = await self.health.Check(health_pb2.HealthCheckRequest(service=_ROUTER_SERVICE), timeout=0.5)
                self._serving = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                self._serving = False
            self._checked_at = time.monotonic()
            return self._serving

    async def close(self) -> None:
        await self.watcher.stop()
        if self.console is not None:
            await self.console.close()
        if self.channel is not None:
            await self.channel.close()


GATEWAY = web.AppKey("gateway", Gateway)


def model_list(policy: Policy, created: int) -> list[dict[str, Any]]:
    """`auto`, every route, then every model, as OpenAI model objects (routemesh facts in `routemesh`)."""
    def entry(name: str, owner: str, kind: str, description: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": owner,
                "routemesh": {"kind": kind, "description": description}}

    entries = {"auto": entry("auto", "routemesh", "auto", f"routemesh decides (route {policy.defaults.route})")}
    for name, route in policy.routes.items():
        entries.setdefault(name, entry(name, "routemesh", "route", route.description))
    for name, model in policy.models.items():
        entries.setdefault(name, entry(name, model.provider, "model", model.description))
    return list(entries.values())


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


async def healthz(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    if gateway.draining:
        return web.Response(status=503, text="draining")
    if not await gateway.router_serving():
        return web.Response(status=503, text="router not serving")
    return web.Response(text="ok")


def _policy_or_error(gateway: Gateway) -> Policy:
    if gateway.policy.current is None:
        raise GatewayError(503, "no policy yet: the control plane has not been reached", type="service_unavailable",
                           code="no_policy")
    return gateway.policy.current.policy


async def list_models(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    data = model_list(_policy_or_error(gateway), gateway.started)
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    name = request.match_info["model"]
    for item in model_list(_policy_or_error(gateway), gateway.started):
        if item["id"] == name:
            return web.json_response(item)
    raise GatewayError(404, f"unknown model or route {name!r}", param="model", code="model_not_found")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _gateway(request).chat(request)


async def explain(request: web.Request) -> web.Response:
    return await _gateway(request).chat.explain(request)


async def feedback(request: web.Request) -> web.Response:
    return await _gateway(request).chat.feedback(request)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def openai_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A SERVER span per API request (continuing an incoming traceparent); every error in OpenAI's shape."""
    if request.path == "/healthz":
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with tracer().start_as_current_span(
        f"{request.method} {route}", context=propagate.extract(request.headers), kind=SpanKind.SERVER,
        attributes={_HTTP_METHOD: request.method, _HTTP_ROUTE: route, _URL_PATH: request.path},
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            response = await handler(request)
        except GatewayError as error:
            response = error_response(error)
        except web.HTTPException as exc:
            code = "not_found" if exc.status == 404 else None
            response = error_response(GatewayError(exc.status, f"{exc.reason}: {request.method} {request.path}",
                                                   code=code))
        except Exception:
            # Users get a short message; the traceback stays in the gateway's log.
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = error_response(GatewayError(500, "internal error in the gateway", type="server_error",
                                                   code="internal_error"))
        span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR, str(response.status)))
        return response



def create_app(gateway: Gateway, metrics: GatewayMetrics | None = None) -> web.Application:
    middlewares = [metrics.middleware, openai_middleware] if metrics is not None else [openai_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/routemesh/explain", explain)
    app.router.add_post("/v1/feedback", feedback)
    if gateway.console is not None:
        add_console(app, gateway.console)
    return app


class _Refuse(asyncio.Protocol):
    """A connection past the cap: a 503 in OpenAI's shape, then closed, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps(GatewayError(503, "the gateway has too many open connections; retry shortly",
                                       type="service_unavailable", code="too_many_connections").body()).encode()
        stream = cast(asyncio.Transport, transport)
        stream.write(_REFUSAL % (len(body), body))
        stream.close()


class CappedTCPSite(web.BaseSite):
    """A TCP listener that hands aiohttp at most `max_connections` open connections (0: no cap).

    aiohttp has no connection cap of its own, and every connection costs a handler task and buffers even
    when it sends nothing. Past the cap, a new connection gets a 503 and is closed at once. The count is the
    server's open connections when one is accepted: a burst accepted in one loop pass can pass it by at
    most the listen backlog.
    """

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, backlog: int = 1024,
                 max_connections: int = MAX_CONNECTIONS, tls: ReloadingSslContext | None = None):
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._tls = tls
        self._max_connections = max_connections
        self._aiohttp: web.Server | None = None
        self.refused = 0
        self._logged_at = -math.inf

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self._port}"

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._aiohttp is not None
        if self._tls is not None:
            self._tls.refresh()
        if self._max_connections and len(self._aiohttp.connections) >= self._max_connections:
            self.refused += 1
            if time.monotonic() - self._logged_at >= _REFUSAL_LOG_EVERY_S:
                self._logged_at = time.monotonic()
                log.warning("%d open connections, the cap: refusing new ones (%d so far)",
                            self._max_connections, self.refused)
            return _Refuse()
        return self._aiohttp()

    async def start(self) -> None:
        await super().start()
        self._aiohttp = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._backlog,
            ssl=self._tls.context if self._tls is not None else None)


@dataclass
class GatewayServer:
    """A running gateway; `url` is its root (the OpenAI base URL is url + "/v1")."""

    runner: web.AppRunner
    gateway: Gateway
    host: str
    port: int
    https: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}"

    @property
    def policy(self) -> PolicyHolder:
        return self.gateway.policy

    async def close(self) -> None:
        """Stop accepting, let in-flight requests and streams finish within the grace, then stop."""
        self.gateway.draining = True
        await self.runner.cleanup()
        await self.gateway.close()


async def start_gateway(router_address: str | LocalRouter, host: str = "127.0.0.1", port: int = 0, *,
                        control_address: str | None = None, grace_s: float = 30.0,
                        timeout_s: float = 300.0, header_timeout_s: float = HEADER_TIMEOUT_S,
                        body_timeout_s: float = BODY_TIMEOUT_S,
                        max_connections: int = MAX_CONNECTIONS,
                        metrics: CollectorRegistry | None = None, telemetry_address: str | None = None,
                        redis_url: str = "", redis_prefix: str = "routemesh:") -> GatewayServer:
    """Start the gateway on host:port (0 picks a free port) in the running loop; `timeout_s` bounds each chat.

    `header_timeout_s` bounds the wait for a whole request line and headers, from the connection's opening
    or its previous answer; `body_timeout_s` the wait for a whole body; `max_connections` (0: none) caps
    the open connections; with `metrics`, requests are counted there (gateway.metrics). The console reads
    telemetry at `telemetry_address` and checks admin API keys in `redis_url` (gateway.console.auth).
    """
    control = control_address or os.environ.get("ROUTEMESH_CONTROL_ADDR", DEFAULT_CONTROL)
    gateway = Gateway(router_address, control, timeout_s, body_timeout_s)
    telemetry = telemetry_address or os.environ.get("ROUTEMESH_TELEMETRY_ADDR", DEFAULT_TELEMETRY)
    try:
        gateway.console = build_console(telemetry, control, lambda: gateway.policy.current, redis_url=redis_url,
                                        redis_prefix=redis_prefix)
    except BaseException:
        await gateway.close()
        raise
    recorder = GatewayMetrics(metrics, gateway.policy, policy_version=gateway.local is None) \
        if metrics is not None else None
    # handler_cancellation: a caller that hangs up cancels its handler, which cancels the router call.
    # keepalive_timeout is the header timeout: aiohttp starts it when a connection opens and again after
    # each answer, and closes the connection when it fires while no whole request head has arrived, however
    # many bytes trickled in (a slowloris); bytes do not extend it. An idle keep-alive connection closes
    # after as long, which clients' pools expect (httpx keeps idle connections 5 s). The start at opening
    # came with aio-libs/aiohttp#13681 (in the 3.14.5 this is tested on); before it, a first request head
    # was waited for without bound. tests/integration/test_gateway_inputs.py fails on such a version.
    runner = web.AppRunner(create_app(gateway, recorder), handle_signals=False, access_log=None,
                           handler_cancellation=True, shutdown_timeout=grace_s, keepalive_timeout=header_timeout_s)
    await runner.setup()
    try:
        # With the service's TLS files in the environment (common.tls), HTTPS with the gateway's certificate.
        files = TlsFiles.from_env()
        tls = ReloadingSslContext(files) if files is not None else None
        await CappedTCPSite(runner, host, port, backlog=1024, max_connections=max_connections, tls=tls).start()
    except OSError:
        await runner.cleanup()
        await gateway.close()
        raise
    gateway.watcher.start()
    return GatewayServer(runner=runner, gateway=gateway, host=host, port=runner.addresses[0][1], https=tls is not None)
