"""The shared serve() helper: health, reflection, interceptors and graceful shutdown for every service."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from routemesh.common.admin import AdminAuth
from routemesh.common.interceptors import ServerInterceptor
from routemesh.common.metrics import MetricsServer
from routemesh.common.tls import TlsFiles, server_credentials

log = logging.getLogger(__name__)
# How often a service not yet ready is asked again (serve's health says SERVING within this of readiness).
READINESS_POLL_S = 0.2

# Keepalive lets clients notice a frozen peer within seconds; message limits allow long prompts.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # grpcio 1.85 times keepalive pings by this, not the above
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
    # Clients re-resolve DNS when a connection is retired, so new replicas (compose --scale, an autoscaler)
    # get traffic within a minute; streams in flight get ten more minutes to finish.
    ("grpc.max_connection_age_ms", 60_000),
    ("grpc.max_connection_age_grace_ms", 600_000),
]


@dataclass
class Service:
    """What serve() needs of a service: its name, how to add its servicers, and its gRPC service names."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    grpc_services: Sequence[str]
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    # Called when draining starts, before the grace period: ends streams that never finish by themselves.
    on_drain: Callable[[], None] | None = None
    # Whether the service is ready (for example, holds a policy): asked every READINESS_POLL_S until it first
    # says so, and never again; health then says SERVING until draining. Readiness is a start-up gate: every
    # service's ready() stays true once true (a held policy is never dropped), so asking on would only wake an
    # idle process five times a second for nothing.
    ready: Callable[[], bool] = field(default=lambda: True)
    # Called by applications outside the mesh (the router): with TLS on, they are not asked for a mesh
    # certificate. Internal services (the default) accept only callers with one (mutual TLS).
    external: bool = False
    # What admits an operator to the admin RPCs besides the admin certificate (common.admin); None: nothing.
    admin: AdminAuth | None = None
    # Its Prometheus registry when metrics are on (common.metrics); serve() exposes it on `metrics_listen`.
    metrics: CollectorRegistry | None = None


@dataclass
class RunningServer:
    """A started server with its bound port and health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


async def create_server(service: Service, address: str) -> RunningServer:
    """Build and start the server on `address` (port 0 picks a free one); call inside the running loop."""
    files = TlsFiles.from_env()
    server = grpc.aio.server(interceptors=[ServerInterceptor(check_callers=files is not None, admin=service.admin)],
                             options=SERVER_OPTIONS)
    service.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service.grpc_services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    if files is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(files, require_client_auth=not service.external))
    if port == 0:
        raise SystemExit(f"{service.name}: cannot listen on {address}")
    await server.start()
    return RunningServer(server=server, port=port, health=health_servicer)


async def _track_readiness(service: Service, running: RunningServer, poll_s: float = READINESS_POLL_S) -> None:
    """Report NOT_SERVING until the service is first ready (for example, holds a policy), then SERVING; done then
    (see Service.ready: readiness does not go back, and draining sets NOT_SERVING itself)."""
    async def report(state: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        await running.health.set("", state)
        for name in service.grpc_services:
            await running.health.set(name, state)

    if not service.ready():
        await report(health_pb2.HealthCheckResponse.NOT_SERVING)
        while not service.ready():
            await asyncio.sleep(poll_s)
    await report(health_pb2.HealthCheckResponse.SERVING)


def tune_gc() -> None:
    """The collector settings every service runs with (micro-benchmarks call this too, to measure the same).

    Everything built so far (modules, stubs, policy) lives as long as the process: frozen, collections no
    longer walk it; and a young generation of 10,000 objects instead of 700 lets a request's short-lived
    protos and dicts die by reference count before a collection looks at them (docs/bench/README.md has the
    collector time per request before and after).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def serve(service: Service, address: str, *, grace_s: float = 30.0, metrics_listen: str = "") -> None:
    """Run `service` on `address` until SIGTERM or SIGINT, then drain in-flight RPCs for up to grace_s.

    With a registry and `metrics_listen` (HOST:PORT), its /metrics is served there from start to the end.
    """
    exporter = MetricsServer(service.metrics, metrics_listen, f"routemesh {service.name}") \
        if service.metrics is not None and metrics_listen else None
    if exporter is not None:
        exporter.start()
        print(f"routemesh {service.name} metrics on {exporter.url}", flush=True)
    try:
        await _serve(service, address, grace_s)
    finally:
        if exporter is not None:
            exporter.stop()


async def _serve(service: Service, address: str, grace_s: float) -> None:
    if service.on_start:
        await service.on_start()
    running = await create_server(service, address)
    tune_gc()
    log.info("%s listening on %s (port %d)", service.name, address, running.port)
    print(f"routemesh {service.name} listening on {address.rsplit(':', 1)[0]}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    readiness = asyncio.create_task(_track_readiness(service, running))
    await stop.wait()
    log.info("%s draining (grace %.0fs)", service.name, grace_s)
    readiness.cancel()
    await running.health.enter_graceful_shutdown()
    if service.on_drain:
        service.on_drain()
    await running.server.stop(grace_s)
    if service.on_stop:
        await service.on_stop()
    log.info("%s stopped", service.name)
