"""One server interceptor for every service: a SERVER span per RPC and domain errors as rich statuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.channels import set_serving_deadline
from routemesh.common.admin import ADMIN_ACTOR, AdminAuth
from routemesh.common.errors import AdminRequired, CallerNotAllowed, InvalidRequest, MessageTooLarge, RoutemeshError
from routemesh.common.tls import peer_identity
from routemesh.common.tracing import context_of_traceparent, extract_context, tracer

log = logging.getLogger(__name__)
T = TypeVar("T")
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
# Request bytes each method accepts; the rest take DEFAULT_MAX_REQUEST_BYTES. The server's transport limit
# (common.serve.SERVER_OPTIONS) is the largest of these: conversations with long documents are big, while
# a telemetry report, a watch or a policy read has no reason to be, and each byte is parsed into memory.
MiB = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 1 * MiB
MAX_REQUEST_BYTES = {
    "/routemesh.v1.RouterService/Chat": 64 * MiB,
    "/routemesh.v1.RouterService/Explain": 64 * MiB,
    "/routemesh.v1.ClassifierService/Classify": 64 * MiB,
    "/routemesh.v1.ClassifierService/ClassifyStream": 64 * MiB,  # per message
    "/routemesh.v1.ExecutorService/Execute": 64 * MiB,
    "/routemesh.v1.ControlPlaneService/ApplyPolicy": 2 * MiB,
    "/routemesh.v1.TelemetryService/Report": 4 * MiB,
    "/routemesh.v1.TelemetryService/WatchSnapshot": 64 * 1024,
    "/routemesh.v1.ControlPlaneService/WatchPolicy": 64 * 1024,
}


# With mutual TLS, the identities (certificate common names) that may call each internal method; methods
# not listed take any caller the server admits (the router's Chat and Explain serve applications). "admin"
# is the operator's certificate (the CLI's policy, report and top commands).
CALLERS: dict[str, frozenset[str]] = {
    "/routemesh.v1.ExecutorService/Execute": frozenset({"router"}),
    "/routemesh.v1.ClassifierService/Classify": frozenset({"router"}),
    "/routemesh.v1.ClassifierService/ClassifyStream": frozenset({"router"}),
    "/routemesh.v1.TelemetryService/Report": frozenset({"router", "executor"}),
    "/routemesh.v1.TelemetryService/RecordFeedback": frozenset({"router"}),
    "/routemesh.v1.TelemetryService/WatchSnapshot": frozenset({"router"}),
    "/routemesh.v1.TelemetryService/GetSnapshot": frozenset({"router", "admin", "gateway"}),
    "/routemesh.v1.TelemetryService/GetExperimentReport": frozenset({"admin"}),
    # The console (served by the gateway) reads these, and GetSnapshot, GetPolicy and ListPolicyChanges, once the
    # gateway has checked the operator's admin credential (gateway.console.auth), which it passes on.
    "/routemesh.v1.TelemetryService/ListAlerts": frozenset({"admin", "gateway"}),
    "/routemesh.v1.TelemetryService/ListRecentRequests": frozenset({"admin", "gateway"}),
    "/routemesh.v1.TelemetryService/GetLedgerReport": frozenset({"admin", "gateway"}),
    "/routemesh.v1.ControlPlaneService/WatchPolicy": frozenset({"router", "executor", "classifier", "telemetry",
                                                                "gateway"}),
    "/routemesh.v1.ControlPlaneService/GetPolicy": frozenset({"admin", "gateway"}),
    "/routemesh.v1.ControlPlaneService/ApplyPolicy": frozenset({"admin"}),
    "/routemesh.v1.ControlPlaneService/ListPolicyChanges": frozenset({"admin", "gateway"}),
    "/routemesh.v1.ControlPlaneService/CreateKey": frozenset({"admin"}),
    "/routemesh.v1.ControlPlaneService/ListKeys": frozenset({"admin"}),
    "/routemesh.v1.ControlPlaneService/RevokeKey": frozenset({"admin"}),
    "/routemesh.v1.ControlPlaneService/RotateKey": frozenset({"admin"}),
}
# The operator's RPCs: an admin credential (common.admin) admits a caller to them as the admin certificate does.
ADMIN_METHODS = frozenset(method for method, callers in CALLERS.items() if "admin" in callers)


class Undecodable:
    """What a request's bytes became when they do not parse (or are too large): the handler answers with `error`.

    The deserializer cannot set a status itself: grpc would answer a raised DecodeError with UNKNOWN and the
    parser's text, so it returns this, and the wrapped handler raises `error` as any domain error.
    """

    __slots__ = ("error",)

    def __init__(self, error: RoutemeshError):
        self.error = error


def checked_deserializer(method: str, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """`deserializer` bounded by the method's size limit, with undecodable bytes as Undecodable."""
    limit = MAX_REQUEST_BYTES.get(method, DEFAULT_MAX_REQUEST_BYTES)
    parse = deserializer or (lambda data: data)

    def deserialize(data: bytes) -> Any:
        if len(data) > limit:
            return Undecodable(MessageTooLarge(
                f"the request is {len(data):,} bytes; {method.lstrip('/')} accepts at most {limit:,}",
                metadata={"limit_bytes": str(limit)}))
        try:
            return parse(data)
        except DecodeError as exc:
            # protobuf's text says what was wrong ("String field had bad UTF-8", "Wire format was corrupt").
            reason = str(exc).rpartition(": ")[2] or "not a valid message"
            return Undecodable(InvalidRequest(f"the request message does not decode: {reason}",
                                              reason="UNDECODABLE_MESSAGE"))

    return deserialize
# Push streams that live as long as their watcher: one span per stream would never end, and is no request.
_SPANLESS_METHODS = frozenset({"/routemesh.v1.TelemetryService/WatchSnapshot"})


async def _admit(method: str, callers: frozenset[str] | None, admin: AdminAuth | None,
                 context: grpc.aio.ServicerContext) -> None:
    """Refuse a caller the method is not for: by its certificate (TLS), else by its admin credential."""
    identity = peer_identity(context) if callers is not None else None
    if callers is not None and identity in callers:
        return
    if admin is not None:
        actor = await admin.actor(context.invocation_metadata())
        if actor:
            ADMIN_ACTOR.set(actor)
            return
    name = method.lstrip("/")
    if callers is not None:
        who = f"identity {identity!r}" if identity else "a caller without a mesh certificate"
        extra = f", or {admin.describe()}" if admin is not None else ""
        raise CallerNotAllowed(f"{who} may not call {name}; allowed: {', '.join(sorted(callers))}{extra}")
    if admin is not None:
        raise AdminRequired(f"{name} needs an admin credential: authorization: Bearer <{admin.describe()}> "
                            "(the CLI sends ROUTEMESH_API_KEY)")


def _release(exc: BaseException) -> None:
    """Cut what an answered error would keep alive: its traceback's frames, and the errors chained to it.

    grpc keeps the abort on the call state; raised inside an `except`, the abort chains to the error, whose
    traceback holds the handler's frames and through them the request and everything made from it, in a
    cycle back to the call that only a full collection frees (rare under common.serve.tune_gc): a stream of
    large rejected requests grew a service by megabytes per call.
    """
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None


async def _abort(context: grpc.aio.ServicerContext, error: RoutemeshError) -> None:
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


def _answered_error(span: trace.Span, exc: Exception) -> RoutemeshError:
    """The error a caller is answered for `exc` (an unexpected one is logged and answered as INTERNAL), marked
    on the RPC's span; `exc` is released (_release)."""
    if isinstance(exc, RoutemeshError):
        span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, exc.code.value[0])
        span.set_attribute(semconv.ERROR_TYPE, exc.reason)
        span.set_status(Status(StatusCode.ERROR, exc.message))
        error = exc
    else:
        log.error("unhandled error in %s", span.name if hasattr(span, "name") else "rpc", exc_info=exc)
        span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, grpc.StatusCode.INTERNAL.value[0])
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        error = RoutemeshError("internal error; the server log has the details")
    _release(exc)
    return error


def _rpc_span(method: str, parent: otel_context.Context) -> trace.Span:
    service, _, name = method.lstrip("/").rpartition("/")
    return tracer().start_span(
        method.lstrip("/"), context=parent, kind=SpanKind.SERVER,
        attributes={semconv.RPC_SYSTEM: "grpc", semconv.RPC_SERVICE: service, semconv.RPC_METHOD: name})


def serve_message(method: str, traceparent: str, handle: Callable[[], T]) -> T | status_pb2.Status:
    """One request multiplexed on a stream, served as its unary `method` is: its answer, or the status of the
    error it raised (as the interceptor would answer it); with a SERVER span named after `method`, a child of
    `traceparent`, when the caller sent one (an unsampled caller sends none, and gets no root span here).

    `handle` is synchronous: the stream's handler answers its messages one by one, each in well under a
    millisecond, so a span is never current across an await (it is not attached: nothing under it starts spans).
    """
    span = _rpc_span(method, context_of_traceparent(traceparent)) if traceparent else trace.INVALID_SPAN
    failure: Exception | None = None
    try:
        return handle()
    except Exception as exc:  # noqa: BLE001 - answered as a status, as a unary call's error is
        failure = exc
    finally:
        if failure is None:
            span.end()
    try:
        return _answered_error(span, failure).to_status()
    finally:
        span.end()


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A stream's messages; one that did not decode ends the stream with its error: without its id, it cannot be
    answered alone."""
    async for request in requests:
        if type(request) is Undecodable:
            raise request.error
        yield request


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary, server-streaming and bidirectional handlers; leaves health and reflection alone.

    A method's wrapped handler is built once and reused: it reads the caller's metadata from the call's
    own context, so nothing is allocated per call but the span.
    """

    def __init__(self, check_callers: bool = False, admin: AdminAuth | None = None) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}
        # With TLS on: each listed method's caller identity is checked against CALLERS.
        self._check_callers = check_callers
        # What admits an operator to ADMIN_METHODS besides the admin certificate (None: nothing else).
        self._admin = admin

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        deserializer = checked_deserializer(method, handler.request_deserializer)
        callers = CALLERS.get(method) if self._check_callers else None
        admin = self._admin if method in ADMIN_METHODS else None
        if handler.unary_unary:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, callers, admin),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream, callers, admin),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream:
            wrapped = grpc.stream_stream_rpc_method_handler(
                self._wrap_multiplexed(method, handler.stream_stream, callers, admin),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._wrapped[method] = wrapped
        return wrapped

    @staticmethod
    def _start(method: str, context: grpc.aio.ServicerContext) -> trace.Span:
        # Each RPC runs in its own task with its own context copy: calls it makes downstream see its deadline.
        set_serving_deadline(context.time_remaining())
        if method in _SPANLESS_METHODS:
            return trace.INVALID_SPAN
        span = _rpc_span(method, extract_context(context.invocation_metadata()))
        # Each RPC runs in its own task with its own context copy, so this attach needs no detach.
        otel_context.attach(trace.set_span_in_context(span))
        return span

    @staticmethod
    async def _fail(span: trace.Span, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """Answer `exc` as a status and end the span. Called outside the `except` that caught it: see _release."""
        try:
            await _abort(context, _answered_error(span, exc))
        finally:
            span.end()

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]], callers: frozenset[str] | None,
                    admin: AdminAuth | None):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            span = self._start(method, context)
            failure: Exception | None = None
            try:
                if callers is not None or admin is not None:
                    await _admit(method, callers, admin, context)
                if type(request) is Undecodable:
                    raise request.error
                return await behavior(request, context)
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a trace to the caller
                failure = exc
            finally:
                request = None  # nothing of the request outlives the call (see _release)
                if failure is None:
                    span.end()
            if failure is not None:
                await self._fail(span, context, failure)

        return wrapper

    def _wrap_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]],
                     callers: frozenset[str] | None, admin: AdminAuth | None):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            span = self._start(method, context)
            failure: Exception | None = None
            try:
                if callers is not None or admin is not None:
                    await _admit(method, callers, admin, context)
                if type(request) is Undecodable:
                    raise request.error
                async for item in behavior(request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001
                failure = exc
            finally:
                request = None
                if failure is None:
                    span.end()
            if failure is not None:
                await self._fail(span, context, failure)

        return wrapper

    def _wrap_multiplexed(self, method: str, behavior: Callable[..., AsyncIterator[Any]],
                          callers: frozenset[str] | None, admin: AdminAuth | None):
        """A bidirectional stream carries many requests: its callers are admitted and its messages bounded as a
        unary call's are, and each message gets its span from the handler (serve_message); the stream itself,
        which outlives many requests, has none."""
        async def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            failure: Exception | None = None
            try:
                if callers is not None or admin is not None:
                    await _admit(method, callers, admin, context)
                async for item in behavior(_decoded(requests), context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001
                failure = exc
            if failure is not None:
                await self._fail(trace.INVALID_SPAN, context, failure)

        return wrapper
