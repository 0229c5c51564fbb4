"""The gateway's Prometheus metrics: HTTP requests by route and status code, requests in progress, policy version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from routemesh.common.metrics import OTHER, policy_version_gauge
from routemesh.common.policy_watch import PolicyHolder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GatewayMetrics:
    """Instruments and the aiohttp middleware that records them (outermost: it sees the final status code).

    `path` is the route's pattern (/v1/models/{model}, never the model a caller typed); a request no route
    matches counts as "other", so a scan of random paths adds no series.
    """

    def __init__(self, registry: CollectorRegistry, holder: PolicyHolder, policy_version: bool = True):
        self.requests = Counter("routemesh_http_requests", "HTTP requests answered, by route pattern and status code",
                                ["path", "code"], registry=registry)
        self.inflight = Gauge("routemesh_http_inflight_requests", "HTTP requests in progress (streams included)",
                              registry=registry)
        if policy_version:  # not in a router serving HTTP itself: the router's gauge says it
            policy_version_gauge(registry, lambda: holder.current.version if holder.current is not None else 0)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else OTHER
        self.inflight.inc()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            self.inflight.dec()
            self.requests.labels(path, str(code)).inc()
