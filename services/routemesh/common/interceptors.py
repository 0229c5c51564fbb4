"""One server interceptor for every service: a SERVER span per RPC and domain errors as rich statuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from routemesh.common import semconv
from routemesh.common.errors import RoutemeshError
from routemesh.common.tracing import extract_context, tracer

log = logging.getLogger(__name__)
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


async def _abort(context: grpc.aio.ServicerContext, error: RoutemeshError) -> None:
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary and server-streaming handlers; leaves health and reflection alone."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        metadata = details.invocation_metadata
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @staticmethod
    def _start(method: str, metadata: Any) -> trace.Span:
        service, _, name = method.lstrip("/").rpartition("/")
        span = tracer().start_span(
            method.lstrip("/"),
            context=extract_context(metadata),
            kind=SpanKind.SERVER,
            attributes={semconv.RPC_SYSTEM: "grpc", semconv.RPC_SERVICE: service, semconv.RPC_METHOD: name},
        )
        # Each RPC runs in its own task with its own context copy, so this attach needs no detach.
        otel_context.attach(trace.set_span_in_context(span))
        return span

    @staticmethod
    async def _fail(span: trace.Span, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, RoutemeshError):
            span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, exc.code.value[0])
            span.set_attribute(semconv.ERROR_TYPE, exc.reason)
            span.set_status(Status(StatusCode.ERROR, exc.message))
            await _abort(context, exc)
        log.exception("unhandled error in %s", span.name if hasattr(span, "name") else "rpc")
        span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, grpc.StatusCode.INTERNAL.value[0])
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        await _abort(context, RoutemeshError("internal error; the server log has the details"))

    def _wrap_unary(self, method: str, metadata: Any, behavior: Callable[..., Awaitable[Any]]):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            span = self._start(method, metadata)
            try:
                return await behavior(request, context)
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a trace to the caller
                await self._fail(span, context, exc)
            finally:
                span.end()

        return wrapper

    def _wrap_stream(self, method: str, metadata: Any, behavior: Callable[..., AsyncIterator[Any]]):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            span = self._start(method, metadata)
            try:
                async for item in behavior(request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001
                await self._fail(span, context, exc)
            finally:
                span.end()

        return wrapper
