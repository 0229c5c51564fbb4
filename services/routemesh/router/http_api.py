"""The router serving the OpenAI API itself: the gateway's app, with the RouterService stub's calls made in process.

`routemesh serve router --http-listen HOST:PORT` serves the OpenAI-compatible API from the router process: the
gateway's handlers call the RouterServicer directly, in the HTTP request's task, and get back what the stub
would have given them (the same messages; a refusal as the same AioRpcError, status details included), so the
gateway's code does not know which router it has. What the gRPC hop cost (a call out of the gateway, one into
the router, their spans, and a process between them) is gone; the separate gateway (`routemesh serve gateway`)
remains for scaling HTTP apart from routing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from routemesh.common.channels import set_serving_deadline
from routemesh.common.errors import RoutemeshError
from routemesh.common.keys import KeyConfigError
from routemesh.common.tasks import split_listen
from routemesh.gateway.server import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, MAX_CONNECTIONS, GatewayServer, start_gateway
from routemesh.router.servicer import RouterServicer
from routemesh.v1 import router_pb2

log = logging.getLogger(__name__)
Metadata = Sequence[tuple[str, str]]


def rpc_error(exc: BaseException) -> grpc.aio.AioRpcError:
    """The AioRpcError a gRPC caller would have got for `exc` (the server interceptor's mapping)."""
    if not isinstance(exc, RoutemeshError):
        log.error("unhandled error serving the gateway in process", exc_info=exc)
        exc = RoutemeshError("internal error; the server log has the details")
    status = rpc_status.to_status(exc.to_status())
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata),
                                details=status.details)


class _Context:
    """What the servicer reads of a gRPC ServicerContext: the caller's metadata."""

    __slots__ = ("_metadata",)

    def __init__(self, metadata: Metadata | None):
        self._metadata = tuple(metadata or ())

    def invocation_metadata(self) -> Metadata:
        return self._metadata


class LocalChatCall:
    """A Chat call's stand-in: iterated in the caller's task; `cancel()` stops the pipeline as a cancelled RPC would."""

    def __init__(self, servicer: RouterServicer, request: router_pb2.ChatRequest, timeout: float | None,
                 metadata: Metadata | None):
        self._events = servicer.Chat(request, _Context(metadata))  # type: ignore[arg-type]
        self._timeout = timeout
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancel(self) -> bool:
        if self._done:
            return False
        self._done = True
        # The generator is suspended at a yield: closing it runs the pipeline's cleanup (settle, report) there.
        asyncio.get_running_loop().create_task(self._events.aclose())
        return True

    async def __aiter__(self) -> AsyncIterator[router_pb2.ChatResponse]:
        # The deadline downstream calls see, as the server interceptor sets it for a gRPC call.
        set_serving_deadline(self._timeout)
        try:
            async for event in self._events:
                yield event
        except Exception as exc:  # noqa: BLE001 - the caller gets a status, as over gRPC
            raise rpc_error(exc) from None
        finally:
            self._done = True


class LocalRouter:
    """The RouterService stub's methods the gateway uses, served by the servicer in this process."""

    def __init__(self, servicer: RouterServicer, ready: Callable[[], bool]):
        self.servicer = servicer
        self.ready = ready

    def Chat(self, request: router_pb2.ChatRequest, timeout: float | None = None,  # noqa: N802 - the stub's name
             metadata: Metadata | None = None) -> LocalChatCall:
        return LocalChatCall(self.servicer, request, timeout, metadata)

    async def Explain(self, request: router_pb2.ExplainRequest, timeout: float | None = None,  # noqa: N802
                      metadata: Metadata | None = None) -> router_pb2.ExplainResponse:
        return await self._unary(self.servicer.Explain, request, timeout, metadata)

    async def SubmitFeedback(self, request: router_pb2.SubmitFeedbackRequest,  # noqa: N802
                             timeout: float | None = None,
                             metadata: Metadata | None = None) -> router_pb2.SubmitFeedbackResponse:
        return await self._unary(self.servicer.SubmitFeedback, request, timeout, metadata)

    @staticmethod
    async def _unary(method: Callable[..., Any], request: Any, timeout: float | None, metadata: Metadata | None) -> Any:
        set_serving_deadline(timeout)
        try:
            return await method(request, _Context(metadata))
        except Exception as exc:  # noqa: BLE001
            raise rpc_error(exc) from None


class HttpApi:
    """The gateway in the router's process (`--http-listen`): OpenAI-compatible HTTP over the router's servicer."""

    def __init__(self, args: argparse.Namespace, router: LocalRouter, registry: CollectorRegistry | None):
        self.args, self.router, self.registry = args, router, registry
        self.server: GatewayServer | None = None
        self._closing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env, args = os.environ.get, self.args
        host, port = split_listen(args.http_listen, "router --http-listen")
        try:
            self.server = await start_gateway(
                self.router, host, port, control_address=args.control, telemetry_address=args.telemetry,
                grace_s=args.grace_s, timeout_s=float(env("ROUTEMESH_GATEWAY_TIMEOUT_S", "300")),
                header_timeout_s=float(env("ROUTEMESH_GATEWAY_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))),
                body_timeout_s=float(env("ROUTEMESH_GATEWAY_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))),
                max_connections=int(env("ROUTEMESH_GATEWAY_MAX_CONNECTIONS", str(MAX_CONNECTIONS))),
                metrics=self.registry, redis_url=args.redis_url, redis_prefix=args.redis_prefix)
        except OSError as err:
            raise SystemExit(f"cannot listen on {args.http_listen}: {err.strerror or err}") from None
        except (KeyConfigError, ValueError) as err:
            raise SystemExit(f"--http-listen: {err}") from None
        print(f"routemesh router serving HTTP on {self.server.url} (OpenAI API: {self.server.url}/v1, "
              f"console: {self.server.url}/console)", flush=True)

    def drain(self) -> None:
        """Stop accepting; in-flight streams get the grace (called with the gRPC server's drain)."""
        if self.server is not None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.server.close())

    async def close(self) -> None:
        self.drain()
        if self._closing is not None:
            await self._closing
