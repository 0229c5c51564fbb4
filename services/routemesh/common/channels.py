"""Client channels between services: one config, and a client span, trace context and deadline on every call."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.tls import channel_credentials, client_files
from routemesh.common.tracing import tracer

# Retries of idempotent unary calls on UNAVAILABLE, declared in the service config (not hand loops). Chat and
# Explain are retried only while nothing was received (UNAVAILABLE before any response), so an answer is never
# duplicated. Other streams are never retried by the channel: their callers decide what a failed stream means.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [
                {"service": "routemesh.v1.ClassifierService", "method": "Classify"},
                {"service": "routemesh.v1.TelemetryService", "method": "GetSnapshot"},
                {"service": "routemesh.v1.ControlPlaneService", "method": "GetPolicy"},
            ],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.02s",
                "maxBackoff": "0.2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        },
        {
            "name": [{"service": "routemesh.v1.RouterService"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        },
    ],
}

# A call's channel pings the peer this often while the call is open: a frozen executor is noticed in ~1.5 s.
CALL_KEEPALIVE_MS = 1_000
# A watch's channel (policy, health) pings seldom: its stream is open all the time, and a ping a second on
# each would be most of an idle mesh's CPU; the health watch notices a silent telemetry by its heartbeat.
WATCH_KEEPALIVE_MS = 30_000
# A channel with no call for this long goes idle: it closes its connections, and with them their keepalive
# timers, which grpc re-arms every CALL_KEEPALIVE_MS even with no call open (most of an idle mesh's CPU was
# those wakeups). The next call reconnects first (a TCP connect and HTTP/2 settings, plus a TLS handshake with
# TLS on: about a millisecond on one host). A watch's channel always has its stream open: never idle.
CALL_IDLE_MS = 10_000

CHANNEL_OPTIONS: list[tuple[str, object]] = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # A frozen peer is noticed within ~1.5 s while a call is open.
    ("grpc.keepalive_time_ms", CALL_KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 500),
    # grpcio 1.85 times a keepalive ping out by this (default 60 s), not by keepalive_timeout_ms: without
    # it a frozen executor holds its streams for a minute.
    ("grpc.http2.ping_timeout_ms", 500),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.client_idle_timeout_ms", CALL_IDLE_MS),
]

# Calls made in the background, not for a request: a span each would be a root span every few milliseconds
# (reports, readiness checks) or one that lasts as long as the process (watch streams).
BACKGROUND_METHODS = frozenset({
    "/routemesh.v1.TelemetryService/Report",
    "/routemesh.v1.TelemetryService/WatchSnapshot",
    "/routemesh.v1.ControlPlaneService/WatchPolicy",
    "/grpc.health.v1.Health/Check",
})
# What a downstream call keeps back of its caller's remaining time, to answer before the caller gives up.
DEADLINE_MARGIN_S = 0.02
# The deadline (time.monotonic()) of the RPC this task serves; set by the server interceptor.
_SERVING_DEADLINE: ContextVar[float | None] = ContextVar("routemesh_serving_deadline", default=None)


def set_serving_deadline(remaining_s: float | None) -> None:
    """Record the remaining time of the RPC the current task serves (the server interceptor calls this)."""
    _SERVING_DEADLINE.set(None if remaining_s is None else time.monotonic() + remaining_s)


def remaining_s() -> float | None:
    """Seconds left of the RPC the current task serves, or None when it has no deadline."""
    deadline = _SERVING_DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def call_timeout(timeout_s: float | None, margin_s: float = DEADLINE_MARGIN_S) -> float | None:
    """The timeout of a downstream call: its own, capped by the caller's remaining time minus a margin."""
    deadline = _SERVING_DEADLINE.get()
    if deadline is None:
        return timeout_s
    left = max(0.001, deadline - time.monotonic() - margin_s)
    return left if timeout_s is None else min(timeout_s, left)


def target_of(address: str) -> str:
    """A gRPC target: plain host:port is resolved by DNS so replicas behind one name are balanced."""
    if "://" in address or address.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return address
    return f"dns:///{address}"


class _MetadataSetter:
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key.lower(), value))


_SETTER = _MetadataSetter()


def _status_now(call: grpc.aio.Call) -> grpc.StatusCode | None:
    """A finished call's status code, read without a task: the status of a done call is there at once."""
    pending = call.code()
    try:
        pending.send(None)
    except StopIteration as finished:
        return finished.value
    except Exception:  # noqa: BLE001 - a span without a status is better than a failed call
        return None
    pending.close()
    return None


def _end_span(span: Span, call: grpc.aio.Call) -> None:
    code = grpc.StatusCode.CANCELLED if call.cancelled() else _status_now(call)
    if code is not None:
        span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class _TracedMultiCallable:
    """One method of a TracedChannel: starts the CLIENT span, sends trace context, caps the timeout."""

    __slots__ = ("_call", "_name", "_attributes")

    def __init__(self, call: Any, method: str):
        self._call = call
        self._name = method.lstrip("/")
        service, _, name = self._name.rpartition("/")
        self._attributes = {semconv.RPC_SYSTEM: "grpc", semconv.RPC_SERVICE: service, semconv.RPC_METHOD: name}

    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: Sequence[tuple[str, str]] | None = None, **kwargs: Any) -> Any:
        span = tracer().start_span(self._name, kind=SpanKind.CLIENT, attributes=self._attributes)
        sent: list[tuple[str, str]] = list(metadata) if metadata else []
        if span.get_span_context().is_valid:
            propagate.inject(sent, context=trace.set_span_in_context(span), setter=_SETTER)
        try:
            call = self._call(request, timeout=call_timeout(timeout), metadata=sent or None, **kwargs)
        except BaseException:
            span.end()
            raise
        if span.is_recording():
            call.add_done_callback(lambda done: _end_span(span, done))
        return call


class TracedChannel:
    """A grpc.aio channel whose calls each get a CLIENT span, W3C trace context and the caller's deadline.

    Generated stubs take it like any channel. It wraps the channel's multicallables rather than using
    grpc.aio client interceptors, which run every call through an extra task (docs/bench/README.md has the
    measured difference); the span ends in the call's done callback, so nothing is added per message.
    The service that opens a channel owns it and closes it (`close()`) when it stops.
    """

    def __init__(self, address: str, keepalive_ms: int = CALL_KEEPALIVE_MS):
        options = CHANNEL_OPTIONS if keepalive_ms == CALL_KEEPALIVE_MS else [
            (name, keepalive_ms if name == "grpc.keepalive_time_ms" else value) for name, value in CHANNEL_OPTIONS]
        files = client_files()
        if files is None:
            self.channel = grpc.aio.insecure_channel(target_of(address), options=options)
        else:  # mutual TLS: the server checked against the mesh CA, this service's certificate presented
            self.channel = grpc.aio.secure_channel(target_of(address), channel_credentials(files), options=options)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = self.channel.unary_unary(method, *args, **kwargs)
        return call if method in BACKGROUND_METHODS else _TracedMultiCallable(call, method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = self.channel.unary_stream(method, *args, **kwargs)
        return call if method in BACKGROUND_METHODS else _TracedMultiCallable(call, method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel.stream_stream(method, *args, **kwargs)

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)


def open_channel(address: str, keepalive_ms: int | None = None) -> TracedChannel:
    """The channel every routemesh service uses to call another (create inside the running loop).

    `keepalive_ms`: how often an open call is pinged (default CALL_KEEPALIVE_MS, for calls a frozen peer must
    not hold); channels of long-lived watches ping seldom (WATCH_KEEPALIVE_MS) and check their own messages.
    """
    return TracedChannel(address, CALL_KEEPALIVE_MS if keepalive_ms is None else keepalive_ms)
